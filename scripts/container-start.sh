#!/bin/sh
# The container's start command. It never serves the published example keys: with no
# configuration mounted at $JITGATE_CONFIG, the first start writes one into the data volume with
# a fresh admin API key, shows that key once, and later starts reuse the file.
#
#   JITGATE_CONFIG   configuration to serve (default /etc/jitgate/jitgate.toml; mount yours there)
#   JITGATE_HOME     the volumes' parent (default /var/lib/jitgate)
set -eu

home=${JITGATE_HOME:-/var/lib/jitgate}
config=${JITGATE_CONFIG:-/etc/jitgate/jitgate.toml}
generated="$home/data/jitgate.toml"

if [ ! -f "$config" ]; then
    config=$generated
    if [ ! -f "$config" ]; then
        mkdir -p "$home/data" "$home/certs" "$home/recordings"
        key_json=$(jitgate --json api-key new)
        key=$(printf '%s\n' "$key_json" | sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p')
        hash=$(printf '%s\n' "$key_json" | sed -n 's/.*"api_key_sha256": *"\([^"]*\)".*/\1/p')
        if [ -z "$key" ] || [ -z "$hash" ]; then
            echo "jitgate: cannot create an admin API key" >&2
            exit 1
        fi
        umask 077
        cat > "$config.tmp" <<EOF
# Written by the container's first start. Add your [[users]], [[targets]] and [[tasks]]
# (see /usr/share/jitgate/jitgate.toml for a commented example), then restart the container.
[gateway]
public_name = "${JITGATE_PUBLIC_NAME:-localhost}"
api_listen = "0.0.0.0:8440"
ssh_listen = "0.0.0.0:2222"
https_listen = "0.0.0.0:8443"
data_dir = "$home/data"
certs_dir = "$home/certs"
recordings_dir = "$home/recordings"

[store]
url = "sqlite://$home/data/jitgate.db"

[[users]]
name = "admin"
roles = ["admin", "reviewer"]
api_key_sha256 = "$hash"
EOF
        mv "$config.tmp" "$config"
        cat <<EOF
jitgate: no configuration was mounted at ${JITGATE_CONFIG:-/etc/jitgate/jitgate.toml}, so this
first start wrote $config with one user, admin. Its API key is shown this once and
stored nowhere (only its SHA-256 is in the file):

    $key

Add your users, targets and tasks to that file (or mount your own configuration at
/etc/jitgate/jitgate.toml) and restart the container.
EOF
    fi
fi

export JITGATE_CONFIG="$config"
# init creates only missing keys, so restarts keep them.
jitgate init >/dev/null
exec jitgate serve
