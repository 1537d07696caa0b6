"""``ramxchg completion bash|zsh``: a shell completion script, made from the parser itself.

The script completes the commands, each command's options, and channel names (the
folders of ``--root``, ``$RAMXCHG_ROOT`` or the default root) where a command takes a
CHANNEL; everything else completes as file names. zsh runs the bash script through its
``bashcompinit``.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import add_command, build_parser

COMPLETION_EXAMPLE = """\
examples:
  eval "$(ramxchg completion bash)"      # in ~/.bashrc
  eval "$(ramxchg completion zsh)"       # in ~/.zshrc, after compinit
  ramxchg completion bash > ~/.local/share/bash-completion/completions/ramxchg
"""

_SCRIPT = r"""# ramxchg completion for bash (made by 'ramxchg completion bash')
_ramxchg() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local verb="" position=0 root="" i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --root) root=${COMP_WORDS[i+1]}; ((i++)) ;;
            @VALUED@) ((i++)) ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=$word; else ((position++)); fi ;;
        esac
    done
    case $prev in
        --root|--dest-root) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        @VALUED@) return ;;
    esac
    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "@VERBS@ --root --version --help" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        case $verb in
@OPTIONS@
        esac
        return
    fi
    if [[ $position == 0 && " @CHANNEL_VERBS@ " == *" $verb "* ]]; then
        [[ -z $root ]] && root=$RAMXCHG_ROOT
        if [[ -z $root && -d /dev/shm ]]; then
            root=/dev/shm/ramxchg-$(id -u)
        elif [[ -z $root ]]; then
            root=${TMPDIR:-/tmp}/ramxchg-$(id -u)
        fi
        local channels="" folder
        for folder in "$root"/*/; do
            [[ -d $folder/.ramxchg ]] && channels+=" $(basename "$folder")"
        done
        COMPREPLY=($(compgen -W "$channels" -- "$cur"))
    fi
}
complete -o default -F _ramxchg ramxchg
"""

_ZSH_PREFIX = """\
# ramxchg completion for zsh (made by 'ramxchg completion zsh'): the bash script, run by
# zsh's bashcompinit
autoload -U +X bashcompinit && bashcompinit
"""


def register(subparsers: Any) -> None:
    """Add ``completion`` to the ``ramxchg`` command."""
    completion = add_command(
        subparsers,
        "completion",
        run_completion,
        help="print a shell completion script (bash or zsh)",
        description="Print the completion script for your shell: commands, options and "
        "channel names complete with Tab.",
        epilog=COMPLETION_EXAMPLE,
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="your shell")


def run_completion(args: argparse.Namespace) -> int:
    """Print the script for ``args.shell``."""
    script = completion_script(build_parser())
    print((_ZSH_PREFIX if args.shell == "zsh" else "") + script, end="")
    return 0


def completion_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script for ``parser``'s commands and options."""
    commands = commands_of(parser)
    valued = sorted(
        {
            option
            for sub in commands.values()
            for action in sub._actions
            if action.nargs != 0 and action.option_strings
            for option in action.option_strings
            if option not in ("--root", "--dest-root")
        }
    )
    options = []
    for verb, sub in commands.items():
        words = sorted(o for action in sub._actions for o in action.option_strings)
        options.append(
            f'            {verb}) COMPREPLY=($(compgen -W "{" ".join(words)}" -- "$cur")) ;;'
        )
    channel_verbs = [
        verb
        for verb, sub in commands.items()
        if any(action.dest == "channel" for action in sub._actions)
    ]
    return (
        _SCRIPT.replace("@VALUED@", "|".join(valued) or "--")
        .replace("@VERBS@", " ".join(commands))
        .replace("@OPTIONS@", "\n".join(options))
        .replace("@CHANNEL_VERBS@", " ".join(channel_verbs))
    )


def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, by name, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
