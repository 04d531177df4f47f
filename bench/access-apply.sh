#!/usr/bin/env bash
# `bastionctl access apply` on a large access file when nothing changed
# (issue 11): generates an access file of N users (default 1000; one
# ed25519 key each, half in a group with a cluster-wide level, half with a
# namespace level, two clusters) for the group `bench-access`, applies it
# once (creating the accounts), then times RUNS more applies and plans.
#
#   sudo bench/access-apply.sh [N] [RUNS]     BASTIONCTL=path/to/bastionctl
#
# Leaves the accounts (bb0000…) in place for the next run; remove them with
# an access file of the group without users and
# `bastionctl access apply --allow-locks N`, then `userdel`.
set -euo pipefail
n="${1:-1000}" runs="${2:-5}"
bastionctl="${BASTIONCTL:-/usr/local/bin/bastionctl}"
dir="${OUT:-/tmp/bench-access}"
mkdir -p "$dir/keys"
file="$dir/access.toml"
ca="$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout /dev/null \
    -subj /CN=bench -days 1 2>/dev/null | base64 -w0)"
{
    printf '[host]\ngroup = "bench-access"\n[aws]\naccount_id = "123456789012"\n'
    printf 'bastion_role = "arn:aws:iam::123456789012:role/bastion-host"\n'
    for c in hyades pleiades; do
        printf '[[clusters]]\nname = "%s"\nserver = "https://%s.invalid"\ncertificate_authority_data = "%s"\nregion = "eu-west-1"\n' "$c" "$c" "$ca"
    done
    printf '[[groups]]\nname = "bench-sre"\nlevels = [{ cluster = "hyades", level = "poweruser" }]\n'
    for ((i = 0; i < n; i++)); do
        key="$dir/keys/u$i"
        [[ -f $key.pub ]] || ssh-keygen -q -t ed25519 -N '' -C "bb$i" -f "$key"
        printf '[[users]]\nname = "bb%04d"\nkeys = ["%s"]\n' "$i" "$(cat "$key.pub")"
        if ((i % 2 == 0)); then
            printf 'groups = ["bench-sre"]\n'
        else
            printf 'levels = [{ cluster = "pleiades", namespace = "web", level = "user" }]\n'
        fi
    done
} >"$file"
chmod 0644 "$file"
"$bastionctl" access --access "$file" check
echo "first apply (creates what is missing):"
/usr/bin/time -f "  %e s" "$bastionctl" access --access "$file" apply >/dev/null
for ((r = 0; r < runs; r++)); do
    /usr/bin/time -f "apply, nothing changed: %e s, %M KB" "$bastionctl" access --access "$file" apply >/dev/null
    /usr/bin/time -f "plan, nothing changed: %e s" "$bastionctl" access --access "$file" plan >/dev/null
done
