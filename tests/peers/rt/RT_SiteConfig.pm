# Request Tracker 5's whole site configuration for jitgate's tests (tests/it/peers/rt.rs). RT reads
# it through RT_SITE_CONFIG, with RT_SITE_CONFIG_DIR pointing at an empty directory so that none of
# Debian's snippets in /etc/request-tracker5/RT_SiteConfig.d apply. The fixture sets:
#   JITGATE_RT_DB    the test's own copy of the SQLite database Debian's install created
#   JITGATE_RT_PORT  the loopback port this rt-server listens on (unset for the set-up scripts)
# so that one file serves the shared server, a test's own server and the set-up scripts alike.

my $db = $ENV{JITGATE_RT_DB}
    or die "JITGATE_RT_DB is not set: the tests never use the system's RT database\n";
my $port = $ENV{JITGATE_RT_PORT} || 80;

Set($rtname, 'jitgate-test');
Set($Organization, 'jitgate.test');
Set($Timezone, 'UTC');
Set($CorrespondAddress, 'rt@jitgate.test');
Set($CommentAddress, 'rt-comment@jitgate.test');

Set($DatabaseType, 'SQLite');
Set($DatabaseName, $db);

# Served at the root of http://127.0.0.1:PORT (the preseeded empty path was ignored: it stayed /rt).
Set($WebPath, '');
Set($WebDomain, '127.0.0.1');
Set($WebPort, $port);
Set($WebBaseURL, "http://127.0.0.1:$port");

# Warnings and errors (a scrip that could not post, say) go to rt-server's stderr, the test's log.
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($LogToSTDERR, 'warning');

# API tokens are bcrypt hashes checked on every request (REST2 keeps no session for them): at RT's
# default cost of 12 that is about 0.3 s of CPU per request on this machine; 4 (the least bcrypt
# allows) keeps a test's dozens of requests quick. Tokens are hashed at the cost set when made.
Set($BcryptCost, 4);

# Notifications (autoreplies, "you own this ticket") go to a temporary file, never to exim.
Set($MailCommand, 'testfile');

1;
