# shellcheck shell=bash disable=SC1091
# /etc/bash.bashrc of the bastion user image: the system-wide setup of every
# interactive bash. /etc/profile sources it for login shells.

# Non-interactive shells (`ssh bastion -- CMD`, scp, sftp, rsync, git) stop
# here: they must print nothing.
[ -z "${PS1-}" ] && return

shopt -s checkwinsize histappend
HISTCONTROL=ignoreboth
HISTSIZE=10000
HISTFILESIZE=20000

alias ls='ls --color=auto'
alias ll='ls -l --color=auto'
alias grep='grep --color=auto'

# Tab completion: bash-completion loads kubectl's, k9s's, kubectx's and
# kubens's completions (generated or shipped in
# /usr/share/bash-completion/completions) on first use.
if ! shopt -oq posix && [ -r /usr/share/bash-completion/bash_completion ]; then
    . /usr/share/bash-completion/bash_completion
fi
if command -v aws_completer >/dev/null 2>&1; then
    complete -C aws_completer aws
fi

# The prompt shows the current kube context and its namespace, "(demo:web)",
# read from the kubeconfig files at each prompt without running kubectl:
# the files of KUBECONFIG (~/.kube/config:~/.kube/bastion/config here) in
# order, the first current-context set wins, and the first definition of
# that context gives its namespace (kubens sets it; none is "default"), as
# kubectl merges them. BASTION_KUBE_PROMPT=off leaves it out.

# __bastion_kube_value TEXT: TEXT without blanks around it and its quotes.
__bastion_kube_value() {
    local v="$1"
    v="${v#"${v%%[![:space:]]*}"}"
    v="${v%"${v##*[![:space:]]}"}"
    case "$v" in
    \"*\") v="${v:1:${#v}-2}" v="${v//\\\"/\"}" ;;
    \'*\') v="${v:1:${#v}-2}" v="${v//\'\'/\'}" ;;
    esac
    __bastion_kube_v="$v"
}

# __bastion_kube_read FILE: adds FILE's current-context (when none is known
# yet) and its contexts' names and namespaces (in order) to the globals.
__bastion_kube_read() {
    local line indent dash key rest col n=0 section=0 item=0 item_indent=-1 key_col=0 name='' ns=''
    [ -r "$1" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        [ "$n" -gt 10000 ] && break
        [[ "$line" =~ ^(\ *)(-\ +)?([A-Za-z_-]+):(.*)$ ]] || continue
        indent=${#BASH_REMATCH[1]} dash=${BASH_REMATCH[2]} key=${BASH_REMATCH[3]} rest=${BASH_REMATCH[4]}
        col=$((indent + ${#dash}))
        if [ "$col" -eq 0 ]; then
            # A top-level key: the end of the contexts, if they were open.
            [ "$item" -eq 1 ] && [ -n "$name" ] && __bastion_kube_names+=("$name") __bastion_kube_nss+=("$ns")
            item=0 section=0
            case "$key" in
            contexts) section=1 ;;
            current-context)
                if [ -z "$__bastion_kube_cur" ]; then
                    __bastion_kube_value "$rest"
                    __bastion_kube_cur="$__bastion_kube_v"
                fi
                ;;
            esac
            continue
        fi
        [ "$section" -eq 1 ] || continue
        if [ -n "$dash" ] && { [ "$item_indent" -lt 0 ] || [ "$indent" -eq "$item_indent" ]; }; then
            [ "$item" -eq 1 ] && [ -n "$name" ] && __bastion_kube_names+=("$name") __bastion_kube_nss+=("$ns")
            item=1 item_indent=$indent key_col=$col name='' ns=''
        fi
        [ "$item" -eq 1 ] || continue
        if [ "$key" = name ] && [ "$col" -eq "$key_col" ]; then
            __bastion_kube_value "$rest"
            name="$__bastion_kube_v"
        elif [ "$key" = namespace ] && [ "$col" -gt "$key_col" ]; then
            __bastion_kube_value "$rest"
            ns="$__bastion_kube_v"
        fi
    done <"$1"
    [ "$item" -eq 1 ] && [ -n "$name" ] && __bastion_kube_names+=("$name") __bastion_kube_nss+=("$ns")
    return 0
}

# Sets __bastion_kube to "context:namespace", or empty.
__bastion_kube_prompt() {
    local files f i ctx ns=''
    __bastion_kube=''
    [ "${BASTION_KUBE_PROMPT-}" = off ] && return 0
    __bastion_kube_cur='' __bastion_kube_names=() __bastion_kube_nss=()
    IFS=: read -r -a files <<<"${KUBECONFIG:-$HOME/.kube/config}"
    for f in "${files[@]}"; do
        [ -n "$f" ] && __bastion_kube_read "${f/#\~/$HOME}"
    done
    ctx="$__bastion_kube_cur"
    [ -n "$ctx" ] || return 0
    for i in "${!__bastion_kube_names[@]}"; do
        if [ "${__bastion_kube_names[i]}" = "$ctx" ]; then
            ns="${__bastion_kube_nss[i]}"
            break
        fi
    done
    # EKS context names are ARNs: the cluster's name says enough.
    case "$ctx" in arn:aws*:eks:*:cluster/?*) ctx="${ctx##*:cluster/}" ;; esac
    __bastion_kube="$ctx:${ns:-default}"
    # Printable characters only: a name must not drive the terminal.
    __bastion_kube="${__bastion_kube//[^[:print:]]/?}"
}

case ";${PROMPT_COMMAND-};" in
*";__bastion_kube_prompt;"*) ;;
*) PROMPT_COMMAND="__bastion_kube_prompt${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
esac

case "${TERM-}" in
dumb | '') PS1='${__bastion_kube:+($__bastion_kube) }\u@\h:\w\$ ' ;;
*) PS1='${__bastion_kube:+\[\e[36m\]($__bastion_kube)\[\e[0m\] }\[\e[1;32m\]\u@\h\[\e[0m\]:\[\e[1;34m\]\w\[\e[0m\]\$ ' ;;
esac

# An image built without k9s says so, once per session (docs/image.md).
if [ -z "${BASTION_K9S_NOTICE-}" ] && ! command -v k9s >/dev/null 2>&1; then
    echo "k9s is not installed in this image: ops can add it with image/build.sh --k9s FILE (see docs/image.md)" >&2
    export BASTION_K9S_NOTICE=shown
fi
