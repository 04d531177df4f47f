#!/usr/bin/env bash
# Adds (or brings up to date) a bastion user through the access file:
# `bastionctl access add-user` puts NAME with the public key(s) of
# PUBKEY_FILE into /etc/bastion/access.toml (created when missing) and
# applies it: a host account whose login shell is bastion-shell, in group
# bastion-users, password field `*`, keys in /etc/bastion/authorized_keys/NAME.
# Editing the access file and `bastionctl access apply` is the same path.
#
#   provisioning/add-user.sh NAME --key PUBKEY_FILE [--group G]... [--no-default-group]
#
#   --group G             also in access-file group G (created without levels;
#                         members join the host group G too)
#   --no-default-group    for tests of refusals only: a plain host account
#                         outside bastion-users, not in the access file
#                         (sshd's AllowGroups then refuses it)
#
# Idempotent and safe to run concurrently (apply's lock). It refuses to turn
# an existing host account outside bastion-users into a bastion user.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() {
    sed -n '9,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

name=""
key=""
groups=("$BASTION_USERS_GROUP")
while (($#)); do
    case "$1" in
    --key)
        (($# >= 2)) || die "--key needs a public key file"
        key="$2"
        shift 2
        ;;
    --group)
        (($# >= 2)) || die "--group needs a group name"
        groups+=("$2")
        shift 2
        ;;
    --no-default-group)
        groups=("${groups[@]:1}")
        shift
        ;;
    -h | --help) usage ;;
    -*)
        say "unknown option: $1"
        usage
        ;;
    *)
        [[ -z "$name" ]] || die "one user at a time (got '$name' and '$1')"
        name="$1"
        shift
        ;;
    esac
done
[[ -n "$name" && -n "$key" ]] || usage
require_root

# The portable user name set (POSIX), as useradd accepts it on Debian.
[[ "$name" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] ||
    die "invalid user name '$name': use 1-32 of a-z 0-9 _ - starting with a letter or _"
[[ "$name" != root ]] || die "root cannot be a bastion user"
for g in "${groups[@]}"; do
    [[ "$g" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid group name '$g'"
done
[[ -r "$key" ]] || die "cannot read public key file $key"
fingerprints="$(ssh-keygen -l -f "$key" 2>&1)" || die "$key holds no valid public key: $fingerprints"
! grep -q 'PRIVATE KEY' "$key" || die "$key is a private key; pass the public key (.pub)"

if ((${#groups[@]} > 0)) && [[ "${groups[0]}" == "$BASTION_USERS_GROUP" ]]; then
    args=()
    for g in "${groups[@]:1}"; do
        args+=(--group "$g")
    done
    exec /usr/local/bin/bastionctl --config "$BASTION_CONFIG" access --access "$BASTION_ACCESS" \
        add-user "$name" --key "$key" "${args[@]}"
fi

# --no-default-group (tests of refusals): a host account outside
# bastion-users, which neither sshd nor the access file lets in.
ensure_dir "$BASTION_RUN" 0755
# Root's alone: an account that could open the lock could hold it for ever.
(umask 077 && : >>"$BASTION_RUN/add-user.lock")
chmod 0600 "$BASTION_RUN/add-user.lock"
exec 9>"$BASTION_RUN/add-user.lock"
flock -w 120 9 || die "another add-user.sh has held $BASTION_RUN/add-user.lock for 120s"
ensure_dir "$BASTION_HOST_HOME" 0555
for g in "${groups[@]}"; do
    getent group "$g" >/dev/null || groupadd "$g"
done
group_list="$(
    IFS=,
    echo "${groups[*]}"
)"
if getent passwd "$name" >/dev/null; then
    [[ "$(getent passwd "$name" | cut -d: -f7)" == "$BASTION_SHELL" ]] ||
        die "$name already exists with another login shell; refusing"
    usermod -p '*' ${group_list:+-a -G "$group_list"} "$name"
else
    useradd -M -U -d "$BASTION_HOST_HOME" -s "$BASTION_SHELL" -p '*' ${group_list:+-G "$group_list"} "$name"
fi
ensure_dir "$BASTION_KEYS_DIR" 0755
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
cat "$key" >"$tmp"
install_if_changed "$tmp" "$BASTION_KEYS_DIR/$name" 0644 || true
say "host account $name (outside $BASTION_USERS_GROUP, not in the access file; uid $(id -u "$name"))"
