#!/usr/bin/env bash
# Creates (or brings up to date) a bastion user: a host account whose login
# shell is bastion-shell, in group bastion-users, with password field `*`
# (no password login; not `!`, which sshd without PAM treats as locked), and
# the public key(s) of PUBKEY_FILE as /etc/bastion/authorized_keys/NAME.
#
#   provisioning/add-user.sh NAME --key PUBKEY_FILE [--group G]... [--no-default-group]
#
#   --group G             also put the user in group G (created if missing)
#   --no-default-group    do not put the user in bastion-users (sshd's
#                         AllowGroups then refuses them: for tests of refusals)
#
# Idempotent and safe to run concurrently. It refuses to turn an existing
# account with another login shell into a bastion user.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() {
    sed -n '7,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
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

ensure_dir "$BASTION_RUN" 0755
exec 9>"$BASTION_RUN/add-user.lock"
flock -w 120 9 || die "another add-user.sh has held $BASTION_RUN/add-user.lock for 120s"

ensure_dir "$BASTION_HOST_HOME" 0555
for g in "${groups[@]}"; do
    getent group "$g" >/dev/null || groupadd --system "$g"
done
group_list="$(
    IFS=,
    echo "${groups[*]}"
)"

if entry="$(getent passwd "$name")"; then
    uid="$(cut -d: -f3 <<<"$entry")"
    shell="$(cut -d: -f7 <<<"$entry")"
    [[ "$uid" != 0 ]] || die "$name has uid 0; refusing"
    [[ "$shell" == "$BASTION_SHELL" ]] ||
        die "$name already exists with login shell $shell; refusing to turn a host account into a bastion user (if that is intended: usermod -s $BASTION_SHELL $name, then re-run)"
    usermod -p '*' -d "$BASTION_HOST_HOME" ${group_list:+-a -G "$group_list"} "$name"
    action=updated
else
    useradd -M -U -d "$BASTION_HOST_HOME" -s "$BASTION_SHELL" -p '*' ${group_list:+-G "$group_list"} "$name"
    action=created
fi

ensure_dir "$BASTION_KEYS_DIR" 0755
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
cat "$key" >"$tmp"
install_if_changed "$tmp" "$BASTION_KEYS_DIR/$name" 0644 || true

say "$action bastion user $name (uid $(id -u "$name"), groups $(id -Gn "$name" | tr ' ' ,)); key: $BASTION_KEYS_DIR/$name"
