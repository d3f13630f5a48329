import type { DocArgument, DocCommand, DocOption } from './tree.ts';

/**
 * What a value is completed from, by its placeholder in --help: a directory, a file, an image
 * or a system of the store (found as imgctl finds it: --store, $IMGCTL_STORE, else the nearest
 * store.yaml above the working directory), one of the option's choices, or nothing.
 */
export function valueKind(placeholder: string, choices?: string[]): string {
  if (choices) return choices.join(',');
  if (/(^|[-_.])dir$/.test(placeholder)) return '@dir';
  if (/(^|\|)(file|dev)(\||$)|^key\.pub$|^file$/.test(placeholder)) return '@file';
  if (placeholder === 'image') return '@image';
  if (placeholder === 'system') return '@system';
  return '';
}

/**
 * A bash completion script for a commander program, from its documentation tree: subcommands
 * of the command typed so far, its options after a `-`, values of options and arguments by
 * valueKind. Sourced by bash-completion from /usr/share/bash-completion/completions/NAME.
 */
export function bashCompletion(root: DocCommand): string {
  const program = root.path[0]!;
  const fn = `_${program.replace(/\W/g, '_')}`;
  const entries: string[] = [];
  const add = (key: string, words: string[]) => {
    if (words.length > 0)
      entries.push(`    ${shellWord(key)}) REPLY=${shellWord(words.join(' '))} ;;`);
  };
  const visit = (command: DocCommand) => {
    const path = command.path.slice(1).join(' ');
    add(
      `commands:${path}`,
      command.commands.map((c) => c.path.at(-1)!),
    );
    add(
      `options:${path}`,
      command.options.flatMap((o) => o.names),
    );
    add(`values:${path}`, command.options.flatMap(valuedNames));
    add(`args:${path}`, command.arguments.map(argumentKind));
    command.commands.forEach(visit);
  };
  visit(root);
  return `# bash completion for ${program}                                  -*- shell-script -*-
# Generated from ${program}'s commands and options (the tree its --help prints) by
# scripts/package.ts; do not edit.

# ${fn}_spec KEY: sets REPLY to the words of KEY, one of commands:PATH, options:PATH,
# values:PATH (OPTION=KIND of the options that take a value) or args:PATH (the kind of each
# argument), where PATH is the command typed so far, without '${program}'.
${fn}_spec() {
  REPLY=
  case $1 in
${entries.join('\n')}
  esac
}

# ${fn}_store WORDS...: the store the command line names (--store DIR), else $IMGCTL_STORE,
# else the nearest directory with a store.yaml above the working directory.
${fn}_store() {
  local i dir
  for ((i = 1; i < $#; i++)); do
    if [[ \${!i} == --store ]]; then
      i=$((i + 1))
      [[ \${!i} == = ]] && i=$((i + 1))
      REPLY=\${!i}
      return
    elif [[ \${!i} == --store=* ]]; then
      REPLY=\${!i#--store=}
      return
    fi
  done
  if [[ -n \${IMGCTL_STORE-} ]]; then
    REPLY=$IMGCTL_STORE
    return
  fi
  dir=$PWD
  while [[ -n $dir && ! -f $dir/store.yaml ]]; do dir=\${dir%/*}; done
  [[ -f $dir/store.yaml ]] && REPLY=\${dir:-/} || REPLY=
}

# ${fn}_values KIND CUR WORDS...: COMPREPLY for a value of KIND
${fn}_values() {
  local kind=$1 cur=$2 store entry names=()
  shift 2
  case $kind in
    @dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
    @file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
    @image | @system)
      ${fn}_store "$@"
      store=$REPLY
      [[ -n $store ]] || return
      if [[ $kind == @image ]]; then
        for entry in "$store"/images/*/image.yaml; do
          [[ -f $entry ]] && entry=\${entry%/image.yaml} && names+=("\${entry##*/}")
        done
      else
        for entry in "$store"/systems/*.yaml; do
          [[ -f $entry ]] && entry=\${entry%.yaml} && names+=("\${entry##*/}")
        done
      fi
      # names from the disk are only offered when they are valid names, and matched here, not
      # by compgen -W, which would expand $(…) in a directory's name
      for entry in "\${names[@]}"; do
        [[ $entry =~ ^[a-z0-9][a-z0-9._-]{0,62}$ && $entry == "$cur"* ]] && COMPREPLY+=("$entry")
      done
      ;;
    - | '') ;;
    *) COMPREPLY=($(compgen -W "\${kind//,/ }" -- "$cur")) ;;
  esac
}

${fn}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} path= word value= i entry kinds commands args=0
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=\${COMP_WORDS[i]}
    if [[ -n $value ]]; then
      # the value of the option before; "--opt=value" reaches here as --opt, =, value
      [[ $word == = ]] || value=
      continue
    fi
    case $word in
      --*=*) ;;
      -*)
        ${fn}_spec "values:$path"
        for entry in $REPLY; do [[ \${entry%%=*} == "$word" ]] && value=1; done
        ;;
      *)
        ${fn}_spec "commands:$path"
        if ((args == 0)) && [[ " $REPLY " == *" $word "* ]]; then
          path=\${path:+$path }$word
        else
          args=$((args + 1))
        fi
        ;;
    esac
  done

  # a value of the option just before (--opt VALUE, --opt=VALUE)
  local option=\${COMP_WORDS[COMP_CWORD - 1]}
  [[ $option == = ]] && option=\${COMP_WORDS[COMP_CWORD - 2]}
  [[ $cur == = ]] && cur=
  if [[ -n $value ]]; then
    ${fn}_spec "values:$path"
    for entry in $REPLY; do
      if [[ \${entry%%=*} == "$option" ]]; then
        ${fn}_values "\${entry#*=}" "$cur" "\${COMP_WORDS[@]}"
        return
      fi
    done
    return
  fi

  if [[ $cur == -* ]]; then
    ${fn}_spec "options:$path"
    COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
    return
  fi
  ${fn}_spec "commands:$path"
  commands=$REPLY
  if [[ -n $commands ]] && ((args == 0)); then
    COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    return
  fi
  ${fn}_spec "args:$path"
  kinds=($REPLY)
  ((args < \${#kinds[@]})) || args=$((\${#kinds[@]} - 1))
  ((args >= 0)) && ${fn}_values "\${kinds[args]}" "$cur" "\${COMP_WORDS[@]}"
}

complete -F ${fn} ${program}
`;
}

/** `--store=@dir`-style entries: each name of an option that takes a value, with its kind. */
function valuedNames(option: DocOption): string[] {
  if (option.valueName === undefined) return [];
  const kind = valueKind(option.valueName, option.choices) || '-';
  return option.names.map((n) => `${n}=${kind}`);
}

/** The kind of a positional argument ('-' for none, so the words stay in place). */
function argumentKind(argument: DocArgument): string {
  return valueKind(argument.name) || '-';
}

/** A word for a bash `case` pattern or assignment, single-quoted. */
function shellWord(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
