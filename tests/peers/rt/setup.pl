#!/usr/bin/perl
# Prepares a fresh copy of Debian's RT database for jitgate's tests, then prints a new API token
# for RT's root user on stdout (send it as "Authorization: token <value>").
#
#   RT_SITE_CONFIG=tests/peers/rt/RT_SiteConfig.pm RT_SITE_CONFIG_DIR=<empty dir> \
#   JITGATE_RT_DB=<copy of the database> perl -I/usr/share/request-tracker5/lib setup.pl
#
# Privileged users (every user the tests create) get the rights needed to own and work tickets in
# every queue; without OwnTicket, assigning a ticket fails with "That user may not own tickets in
# that queue".
use strict;
use warnings;
use RT;

RT::LoadConfig();
RT::Init();

my @rights = qw(OwnTicket ShowTicket ModifyTicket SeeQueue CreateTicket ReplyToTicket CommentOnTicket);

my $privileged = RT::Group->new( RT->SystemUser );
$privileged->LoadSystemInternalGroup('Privileged');
die "no Privileged group in RT's database\n" unless $privileged->id;
for my $right (@rights) {
    next if $privileged->PrincipalObj->HasRight( Right => $right, Object => RT->System );
    my ( $ok, $msg ) = $privileged->PrincipalObj->GrantRight( Right => $right, Object => RT->System );
    die "granting $right to Privileged: $msg\n" unless $ok;
}

my $root = RT::User->new( RT->SystemUser );
$root->Load('root');
die "no root user in RT's database\n" unless $root->id;
# RT checks a token against each of its owner's tokens in turn, a bcrypt hash each: the tests' is
# the only one, so requests stay quick however often this runs on one database.
my $description = 'jitgate integration tests';
my $old = RT::AuthTokens->new( RT->SystemUser );
$old->LimitOwner( VALUE => $root->id );
while ( my $token = $old->Next ) {
    $token->Delete if ( $token->Description // '' ) eq $description;
}
my ( $ok, $msg, $token ) = RT::AuthToken->new( RT->SystemUser )->Create(
    Owner       => $root->id,
    Description => $description,
);
die "creating an API token for root: $msg\n" unless $ok && $token;
print "$token\n";
