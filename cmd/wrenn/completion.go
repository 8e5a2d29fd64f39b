package main

import "fmt"

const bashCompletion = `# wrenn bash completion: source <(wrenn completion bash)
_wrenn() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[1]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "login capsule exec ps attach kill shell cp ls port snapshot template completion version help" -- "$cur"))
		return
	fi
	if [ "$COMP_CWORD" -eq 2 ]; then
		case $prev in
		capsule) COMPREPLY=($(compgen -W "create ls get rm pause resume" -- "$cur")); return ;;
		snapshot) COMPREPLY=($(compgen -W "create ls rm" -- "$cur")); return ;;
		template) COMPREPLY=($(compgen -W "ls build" -- "$cur")); return ;;
		port) COMPREPLY=($(compgen -W "ls url public private" -- "$cur")); return ;;
		completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")); return ;;
		esac
	fi
	case $prev in
	capsule|exec|ps|attach|kill|shell|cp|ls|port)
		local ids
		ids=$(wrenn capsule ls --json 2>/dev/null | sed -n 's/^    "id": "\(.*\)",$/\1/p')
		COMPREPLY=($(compgen -W "$ids" -- "$cur"))
		;;
	esac
	[ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
}
complete -F _wrenn wrenn
`

const zshCompletion = `#compdef wrenn
# wrenn zsh completion: source <(wrenn completion zsh)
autoload -U bashcompinit && bashcompinit
` + bashCompletion

func (c *cli) completion(args []string) error {
	if len(args) != 1 {
		return usageError("completion: want bash or zsh")
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(c.stdout, bashCompletion)
	case "zsh":
		fmt.Fprint(c.stdout, zshCompletion)
	default:
		return usageError("completion: want bash or zsh, not %q", args[0])
	}
	return nil
}
