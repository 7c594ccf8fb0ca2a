#!/bin/sh
# Make broker credentials for a site: DIR/passwd (mosquitto's password file) and one
# DIR/USER.password per user (its password, one line, mode 0600), for users that have none
# yet. Running it again adds new users and leaves existing ones alone.
#
#   deploy/credentials.sh DIR USER...
#   deploy/credentials.sh /etc/fedbus/credentials coordinator operator monitor agent-0 agent-1
#
# Usernames: an agent's is its agent id; coordinator, operator and monitor are the roles of
# deploy/mosquitto/acl. Give each process only its own USER.password file (FEDBUS_PASSWORD_FILE).
# Optional, for containers (deploy/compose.yaml):
#   BROKER_UID  chown DIR/passwd (and DIR/acl) to the user mosquitto runs as (1883 in the
#               eclipse-mosquitto image), which must read them
#   FEDBUS_UID  chown the USER.password files to the user fedbus processes run as
#   ACL_FILE    copy this ACL to DIR/acl, beside the password file the broker reads
# Reload a running broker afterwards: kill -HUP <pid>.
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: $0 DIR USER..." >&2
    exit 2
fi
dir=$1
shift
umask 077
mkdir -p "$dir"
for user in "$@"; do
    if [ -s "$dir/$user.password" ] && grep -q "^$user:" "$dir/passwd" 2>/dev/null; then
        continue
    fi
    # --generate prints the new password alone on stdout; written whole, then moved in place.
    coordinator credentials add --passwd "$dir/passwd" --user "$user" --generate \
        > "$dir/$user.password.new"
    mv "$dir/$user.password.new" "$dir/$user.password"
    echo "made credentials for $user" >&2
done
if [ -n "${ACL_FILE:-}" ]; then
    cp "$ACL_FILE" "$dir/acl"
fi
if [ -n "${BROKER_UID:-}" ]; then
    chown "$BROKER_UID" "$dir/passwd"
    [ ! -e "$dir/acl" ] || chown "$BROKER_UID" "$dir/acl"
fi
if [ -n "${FEDBUS_UID:-}" ]; then
    for user in "$@"; do
        chown "$FEDBUS_UID" "$dir/$user.password"
    done
fi
