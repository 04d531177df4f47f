# /etc/bash.bashrc of the bastion user image: the system-wide setup of every
# interactive bash. /etc/profile sources it for login shells.

# Non-interactive shells (`ssh bastion -- CMD`, scp, sftp, rsync) stop here:
# they must print nothing.
[ -z "${PS1-}" ] && return

shopt -s checkwinsize histappend
HISTCONTROL=ignoreboth
HISTSIZE=10000
HISTFILESIZE=20000

case "${TERM-}" in
    dumb | '') PS1='\u@\h:\w\$ ' ;;
    *) PS1='\[\e[1;32m\]\u@\h\[\e[0m\]:\[\e[1;34m\]\w\[\e[0m\]\$ ' ;;
esac

alias ls='ls --color=auto'
alias ll='ls -l --color=auto'
alias grep='grep --color=auto'

# Tab completion: bash-completion loads kubectl's, kubectx's and kubens's
# completions (from /usr/share/bash-completion/completions) on first use.
if ! shopt -oq posix && [ -r /usr/share/bash-completion/bash_completion ]; then
    . /usr/share/bash-completion/bash_completion
fi
if command -v aws_completer >/dev/null 2>&1; then
    complete -C aws_completer aws
fi
