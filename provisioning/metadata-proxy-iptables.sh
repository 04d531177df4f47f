#!/usr/bin/env bash
# The bastion network's firewall for the metadata proxy
# (docs/ARCHITECTURE.md, "A credential request, step by step").
#
#   provisioning/metadata-proxy-iptables.sh apply|remove|check
#       [--bridge bastion0] [--gateway 172.30.0.1] [--port 8775]
#       [--users-bridges bst+|none] [--users-subnet 172.31.0.0/16]
#       [--allow-tcp PORT]...
#
# apply   From the bridges (BRIDGE, the gateway's, and every user's own,
#         USERS_BRIDGES, an iptables interface pattern; containers only:
#         the host's own traffic is never matched):
#         - DNAT 169.254.169.254:80 (IMDS) and 169.254.170.2:80 (container
#           credentials) to the proxy at GATEWAY:PORT;
#         - drop every other destination in 169.254.0.0/16 (DOCKER-USER, the
#           chain Docker evaluates before its own and never flushes);
#         - drop everything sent to the users' networks (USERS_SUBNET), an
#           address in use or not alike, so that no user learns of another;
#         - drop everything the containers send to the host itself (INPUT)
#           except the proxy port and each --allow-tcp port (the demo's STS
#           server), plus replies to connections the host opened;
#         - drop all IPv6 from the bridge (the network has none; this covers
#           the IPv6 IMDS fd00:ec2::254 and fd00:ec2::23).
#         Idempotent: our rules live in our own chains, named after the
#         bridge (BMP-<bridge>-NAT, BMP-<bridge>-IN, BMP-<bridge>-FWD, and
#         their IPv6 twins), rebuilt on every run, with one jump each from
#         the built-in chain. Several bridges (a test network beside
#         bastion0) have independent rules.
# remove  Deletes exactly those jumps and chains, nothing else.
# check   Exits 0 when every rule of `apply` (same options) is in place, else
#         1, naming the first missing rule.
#
# Options default to BASTION_BRIDGE, BASTION_GATEWAY, METADATA_PROXY_PORT,
# BASTION_USERS_BRIDGES, BASTION_USERS_SUBNET and BASTION_ALLOW_TCP
# (space-separated) from the environment, then from /etc/bastion/iptables.env
# (BASTION_IPTABLES_ENV; KEY=VALUE lines, written by install.sh), then to the
# default values of bastion.toml ([bastiond.network], [metadata_proxy].port).
#
# Run it before the proxy and before Docker starts containers (the
# bastion-iptables.service unit is ordered so), so that no container ever
# runs without these rules (kube2iam #170).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# The installed settings (written by install.sh; the boot-time restore,
# `bastionctl doctor` and a hand-run `apply` all read them): KEY=VALUE
# lines of the variables above, each used only when the environment does
# not set it. Read as data, never sourced.
settings_file="${BASTION_IPTABLES_ENV:-/etc/bastion/iptables.env}"
if [[ -r "$settings_file" ]]; then
    while IFS='=' read -r key value; do
        case "$key" in
        BASTION_BRIDGE | BASTION_GATEWAY | METADATA_PROXY_PORT | BASTION_USERS_BRIDGES | BASTION_USERS_SUBNET | BASTION_ALLOW_TCP)
            value="${value%\"}"
            value="${value#\"}"
            [[ -n "${!key+set}" ]] || export "$key=$value"
            ;;
        esac
    done <"$settings_file"
fi

(($# >= 1)) || usage
action="$1"
shift
bridge="${BASTION_BRIDGE:-bastion0}"
gateway="${BASTION_GATEWAY:-172.30.0.1}"
port="${METADATA_PROXY_PORT:-8775}"
users_bridges="${BASTION_USERS_BRIDGES:-bst+}"
users_subnet="${BASTION_USERS_SUBNET:-172.31.0.0/16}"
read -r -a allow_tcp <<<"${BASTION_ALLOW_TCP:-}"
while (($#)); do
    case "$1" in
    --bridge) bridge="$2" ;;
    --gateway) gateway="$2" ;;
    --port) port="$2" ;;
    --users-bridges) users_bridges="$2" ;;
    --users-subnet) users_subnet="$2" ;;
    --allow-tcp) allow_tcp+=("$2") ;;
    *) usage ;;
    esac
    shift 2 || usage
done

die() {
    echo "metadata-proxy-iptables: $*" >&2
    exit 1
}

[[ "$bridge" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "--bridge must be a Linux interface name, got '$bridge'"
[[ "$gateway" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || die "--gateway must be an IPv4 address, got '$gateway'"
[[ "$users_bridges" == none || "$users_bridges" =~ ^[A-Za-z0-9_.-]{1,14}\+?$ ]] ||
    die "--users-bridges must be an interface name, a prefix followed by +, or none; got '$users_bridges'"
[[ "$users_subnet" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] || die "--users-subnet must be an IPv4 CIDR, got '$users_subnet'"
for p in "$port" "${allow_tcp[@]}"; do
    if ! [[ "$p" =~ ^[0-9]{1,5}$ ]] || ((p < 1 || p > 65535)); then
        die "ports must be 1-65535, got '$p'"
    fi
done
[[ $EUID -eq 0 ]] || die "must run as root (it changes the host's firewall)"
command -v iptables >/dev/null || die "iptables not found: apt-get install iptables"
command -v ip6tables >/dev/null || die "ip6tables not found: apt-get install iptables"

NAT="BMP-$bridge-NAT"
INPUT_CHAIN="BMP-$bridge-IN"
FWD="BMP-$bridge-FWD"
COMMENT="bastion-metadata-proxy"

# Each rule as "TOOL TABLE CHAIN RULE..." (TOOL: 4 = iptables, 6 = ip6tables).
rules() {
    local p
    echo "4 nat $NAT -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination $gateway:$port"
    echo "4 nat $NAT -d 169.254.170.2/32 -p tcp --dport 80 -j DNAT --to-destination $gateway:$port"
    # Link-local destinations that were not DNATed above.
    echo "4 filter $FWD -d 169.254.0.0/16 -j DROP"
    # Other users' networks: nothing passes, used address or not.
    echo "4 filter $FWD -d $users_subnet -j DROP"
    echo "4 filter $INPUT_CHAIN -d 169.254.0.0/16 -j DROP"
    echo "4 filter $INPUT_CHAIN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    echo "4 filter $INPUT_CHAIN -d $gateway/32 -p tcp --dport $port -j ACCEPT"
    for p in "${allow_tcp[@]}"; do
        echo "4 filter $INPUT_CHAIN -d $gateway/32 -p tcp --dport $p -j ACCEPT"
    done
    echo "4 filter $INPUT_CHAIN -j DROP"
    echo "6 filter $FWD -j DROP"
    echo "6 filter $INPUT_CHAIN -j DROP"
}

# Jumps from the built-in chains, for each bridge: "TOOL TABLE CHAIN RULE...".
jumps() {
    local i
    local bridges=("$bridge")
    [[ "$users_bridges" == none ]] || bridges+=("$users_bridges")
    for i in "${bridges[@]}"; do
        echo "4 nat PREROUTING -i $i -m comment --comment $COMMENT -j $NAT"
        echo "4 filter INPUT -i $i -m comment --comment $COMMENT -j $INPUT_CHAIN"
        echo "4 filter DOCKER-USER -i $i -m comment --comment $COMMENT -j $FWD"
        echo "6 filter INPUT -i $i -m comment --comment $COMMENT -j $INPUT_CHAIN"
        echo "6 filter FORWARD -i $i -m comment --comment $COMMENT -j $FWD"
    done
}

tool() { if [[ "$1" == 4 ]]; then echo iptables; else echo ip6tables; fi; }

ensure_chain() { # TOOL TABLE CHAIN
    "$(tool "$1")" -w -t "$2" -nL "$3" >/dev/null 2>&1 || "$(tool "$1")" -w -t "$2" -N "$3"
}

# The other bastion network whose chains the users' bridges already jump
# to, if any: the first jump in PREROUTING wins, so a second rule set
# claiming the same bridges would take over the users' IMDS traffic.
users_bridges_claimed_by() {
    [[ "$users_bridges" == none ]] && return 1
    iptables -w -t nat -S PREROUTING 2>/dev/null |
        awk -v i="$users_bridges" -v c="$COMMENT" -v own="$NAT" \
            '$3 == "-i" && $4 == i && $8 == c && $9 == "-j" && $10 != own { print $10; found = 1; exit } END { exit !found }'
}

apply() {
    local v table chain rest other
    if other="$(users_bridges_claimed_by)"; then
        die "the users' bridges ($users_bridges) already go to another network's proxy (chain $other): remove that rule set first (metadata-proxy-iptables.sh remove --bridge ITS-BRIDGE), or pass --users-bridges none for a side network"
    fi
    # DOCKER-USER is Docker's; create it (and its FORWARD jump) if Docker has
    # not run yet. Docker keeps an existing DOCKER-USER's rules.
    if ! iptables -w -t filter -nL DOCKER-USER >/dev/null 2>&1; then
        iptables -w -t filter -N DOCKER-USER
        iptables -w -t filter -A DOCKER-USER -j RETURN
    fi
    iptables -w -t filter -C FORWARD -j DOCKER-USER 2>/dev/null ||
        iptables -w -t filter -I FORWARD 1 -j DOCKER-USER
    # Rebuild our chains: fill new ones, then swap them in atomically enough
    # (flush + refill happens before any jump exists on a first run; on a
    # re-run the old rules are replaced in one iptables-restore each).
    for v in 4 6; do
        local t
        for t in nat filter; do
            [[ "$v" == 6 && "$t" == nat ]] && continue
            local chains=() buf=""
            while read -r rv rtable rchain rrest; do
                [[ "$rv" == "$v" && "$rtable" == "$t" ]] || continue
                [[ " ${chains[*]} " == *" $rchain "* ]] || chains+=("$rchain")
                buf+="-A $rchain $rrest"$'\n'
            done < <(rules)
            ((${#chains[@]})) || continue
            local c
            for c in "${chains[@]}"; do ensure_chain "$v" "$t" "$c"; done
            {
                echo "*$t"
                for c in "${chains[@]}"; do echo "-F $c"; done
                printf '%s' "$buf"
                echo "COMMIT"
            } | "$(tool "$v")-restore" -w --noflush
        done
    done
    while read -r v table chain rest; do
        # shellcheck disable=SC2086 # rest is a rule: word splitting intended
        "$(tool "$v")" -w -t "$table" -C "$chain" $rest 2>/dev/null ||
            "$(tool "$v")" -w -t "$table" -I "$chain" 1 $rest
    done < <(jumps)
    echo "metadata-proxy-iptables: applied on $bridge and $users_bridges (proxy $gateway:$port${allow_tcp[*]:+, also tcp ${allow_tcp[*]}}; users' networks $users_subnet closed)"
}

remove() {
    local v table chain rest
    while read -r v table chain rest; do
        # shellcheck disable=SC2086
        while "$(tool "$v")" -w -t "$table" -C "$chain" $rest 2>/dev/null; do
            "$(tool "$v")" -w -t "$table" -D "$chain" $rest
        done
    done < <(jumps)
    for spec in "4 nat $NAT" "4 filter $INPUT_CHAIN" "4 filter $FWD" "6 filter $INPUT_CHAIN" "6 filter $FWD"; do
        read -r v table chain <<<"$spec"
        if "$(tool "$v")" -w -t "$table" -nL "$chain" >/dev/null 2>&1; then
            "$(tool "$v")" -w -t "$table" -F "$chain"
            "$(tool "$v")" -w -t "$table" -X "$chain"
        fi
    done
    echo "metadata-proxy-iptables: removed from $bridge and $users_bridges"
}

check() {
    local v table chain rest
    while read -r v table chain rest; do
        # shellcheck disable=SC2086
        if ! "$(tool "$v")" -w -t "$table" -C "$chain" $rest 2>/dev/null; then
            echo "metadata-proxy-iptables: missing ($(tool "$v") -t $table): -A $chain $rest" >&2
            echo "run: $0 apply" >&2
            return 1
        fi
    done < <(
        jumps
        rules
    )
    echo "metadata-proxy-iptables: all rules in place on $bridge and $users_bridges"
}

case "$action" in
apply) apply ;;
remove) remove ;;
check) check ;;
*) usage ;;
esac
