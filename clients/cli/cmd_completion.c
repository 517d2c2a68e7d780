/*
 * cmd_completion.c - `fluxion completion bash|zsh`: shell completion
 * scripts written from the command tables (main.c's cli_groups, cli_tops,
 * cli_global_opts), so that a new command or option completes without
 * anyone editing a script.
 *
 * Both scripts share the same data, as shell functions that bash and zsh
 * read alike (`case` only):
 *   _fluxion_subs GROUP         the group's subcommands
 *   _fluxion_opts KEY           the options of a command ("model create")
 *   _fluxion_opt_kind KEY OPT   what OPT's value is: file, output, context,
 *                               value; nothing for a flag
 *   _fluxion_pos KEY N          what positional N (from 0) is: file, or
 *                               "names WORDS..." (the command that lists
 *                               them, run with -o name)
 * and the same walk over the words typed so far: global options and their
 * values skipped, the command (and subcommand) found, positionals counted.
 * Names come from the server the command line names (--server, --context,
 * --token-file... are passed on), with errors silenced: no server, no names.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ the tables */

typedef void (*command_fn)(FILE *f, const cli_group *g, const cli_command *cmd);

static void each_command(FILE *f, command_fn fn)
{
    for (size_t k = 0; k < cli_n_groups; k++)
        for (size_t i = 0; i < *cli_groups[k].n; i++)
            fn(f, &cli_groups[k], &cli_groups[k].table[i]);
    for (size_t t = 0; t < cli_n_tops; t++)
        for (size_t i = 0; i < *cli_tops[t].n; i++)
            fn(f, NULL, &cli_tops[t].table[i]);
}

/* The command that lists the names a placeholder stands for ("model list"
 * for MODEL, the group's own list for NAME and ID), or NULL. */
static const char *lister(const cli_group *g, const char *word)
{
    static const struct {
        const char *word, *list;
    } KNOWN[] = {
        {"MODEL", "model list"}, {"DATASET", "dataset list"},        {"TEAM", "team list"},
        {"JOB", "job list"},     {"CONTEXT", "config get-contexts"},
    };
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++)
        if (!strcmp(word, KNOWN[i].word))
            return KNOWN[i].list;
    if (!g || (strcmp(word, "NAME") && strcmp(word, "ID") && strcmp(word, "SUBJECT")))
        return NULL;
    for (size_t i = 0; i < *g->n; i++) {
        const char *sub = g->table[i].name + strlen(g->word) + 1;
        if (!strcmp(sub, "list") || !strcmp(sub, "get-contexts"))
            return g->table[i].name;
    }
    return NULL;
}

/* The kind of a value from its placeholder: FILE, FILE.safetensors, JOBFILE. */
static const char *value_kind(const char *arg) { return strstr(arg, "FILE") ? "file" : "value"; }

static void emit_subs(FILE *f)
{
    fputs("_fluxion_subs() {\n    case \"$1\" in\n", f);
    for (size_t k = 0; k < cli_n_groups; k++) {
        const cli_group *g = &cli_groups[k];
        fprintf(f, "        %s) echo \"", g->word);
        for (size_t i = 0; i < *g->n; i++)
            fprintf(f, "%s%s", i ? " " : "", g->table[i].name + strlen(g->word) + 1);
        fputs("\" ;;\n", f);
    }
    fputs("    esac\n}\n", f);
}

static void opts_of(FILE *f, const cli_group *g, const cli_command *cmd)
{
    (void)g;
    if (!cmd->opts[0].name)
        return;
    fprintf(f, "        \"%s\") echo \"", cmd->name);
    for (const cli_opt *o = cmd->opts; o->name; o++)
        fprintf(f, "%s--%s", o == cmd->opts ? "" : " ", o->name);
    fputs("\" ;;\n", f);
}

static void opt_kinds_of(FILE *f, const cli_group *g, const cli_command *cmd)
{
    (void)g;
    for (const cli_opt *o = cmd->opts; o->name; o++) {
        const char *kind = o->arg ? value_kind(o->arg) : "flag";
        fprintf(f, "        \"%s|--%s\"", cmd->name, o->name);
        if (o->short_name)
            fprintf(f, "|\"%s|-%c\"", cmd->name, o->short_name);
        fprintf(f, ") echo %s ;;\n", kind);
    }
}

/* A command's positionals: the usage's words outside brackets that are not
 * options or option values ("NAME FILE [--source TEXT]" -> NAME FILE); a
 * lone "[NAME]" is an optional positional. */
static void pos_of(FILE *f, const cli_group *g, const cli_command *cmd)
{
    char usage[256];
    snprintf(usage, sizeof usage, "%s", cmd->usage);
    int n = 0, depth = 0;
    bool skip_next = false;
    for (char *save = NULL, *w = strtok_r(usage, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        size_t len = strlen(w);
        bool lone = w[0] == '[' && w[len - 1] == ']' && w[1] != '-';
        if (lone) {
            w[len - 1] = '\0';
            w++;
        } else if (depth || w[0] == '[') {
            for (char *p = w; *p; p++)
                depth += *p == '[' ? 1 : *p == ']' ? -1 : 0;
            continue;
        }
        if (skip_next || w[0] == '-' || !strcmp(w, "|") || !strcmp(w, "...")) {
            skip_next = w[0] == '-';
            continue;
        }
        const char *list = lister(g, w);
        if (list)
            fprintf(f, "        \"%s|%d\") echo \"names %s\" ;;\n", cmd->name, n, list);
        else if (strstr(w, "FILE"))
            fprintf(f, "        \"%s|%d\") echo file ;;\n", cmd->name, n);
        n++;
    }
}

static void emit_data(FILE *f)
{
    fputs("_fluxion_tops=\"", f);
    for (size_t k = 0; k < cli_n_groups; k++)
        fprintf(f, "%s%s", k ? " " : "", cli_groups[k].word);
    for (size_t t = 0; t < cli_n_tops; t++)
        for (size_t i = 0; i < *cli_tops[t].n; i++)
            fprintf(f, " %s", cli_tops[t].table[i].name);
    fputs("\"\n_fluxion_groups=\"", f);
    for (size_t k = 0; k < cli_n_groups; k++)
        fprintf(f, " %s", cli_groups[k].word);
    fputs(" \"\n_fluxion_globals=\"", f);
    for (const cli_opt *o = cli_global_opts; o->name; o++)
        fprintf(f, "%s--%s", o == cli_global_opts ? "" : " ", o->name);
    fputs("\"\n_fluxion_outputs=\"", f);
    for (size_t i = 0; i < cli_n_output_names; i++)
        fprintf(f, "%s%s", i ? " " : "", cli_output_names[i]);
    fputs("\"\n", f);
    emit_subs(f);
    fputs("_fluxion_opts() {\n    case \"$1\" in\n", f);
    each_command(f, opts_of);
    fputs("    esac\n}\n", f);
    /* a command's own option first: `model export -o FILE` is a file */
    fputs("_fluxion_opt_kind() {\n    case \"$1|$2\" in\n", f);
    each_command(f, opt_kinds_of);
    for (const cli_opt *o = cli_global_opts; o->name; o++) {
        const char *kind = !o->arg                       ? "flag"
                           : !strcmp(o->name, "output")  ? "output"
                           : !strcmp(o->name, "context") ? "context"
                                                         : value_kind(o->arg);
        fprintf(f, "        *\"|--%s\"", o->name);
        if (o->short_name)
            fprintf(f, "|*\"|-%c\"", o->short_name);
        fprintf(f, ") echo %s ;;\n", kind);
    }
    fputs("    esac\n}\n_fluxion_pos() {\n    case \"$1|$2\" in\n", f);
    each_command(f, pos_of);
    fputs("    esac\n}\n", f);
}

/* The walk over the typed words, in the syntax bash and zsh share; the
 * caller sets `words` (all the words) and `cword` (the index of the word
 * being completed) with the first word at index `base` (0 in bash, 1 in
 * zsh), and gets key, npos and conn (the connection options to pass on). */
static const char WALK[] =
    "_fluxion_walk() {\n"
    "    local i w kind done=\"\"\n"
    "    key=\"\" npos=0 conn=()\n"
    "    for (( i = base + 1; i < cword; i++ )); do\n"
    "        w=\"${words[i]}\"\n"
    "        if [[ $w == -?* ]]; then\n"
    "            kind=$(_fluxion_opt_kind \"$key\" \"${w%%=*}\")\n"
    "            if [[ $w != *=* && -n $kind && $kind != flag ]]; then\n"
    "                (( i++ ))\n"
    "                # bash splits --name=value at the = too\n"
    "                [[ ${words[i]} == = ]] && (( i++ ))\n"
    "                local v=\"${words[i]}\"\n"
    "                # bash splits HOST:PORT at the colon: join it again\n"
    "                while (( i + 1 < cword )) && [[ ${words[i+1]} == : || ${words[i]} == : ]]; "
    "do\n"
    "                    (( i++ )); v=\"$v${words[i]}\"\n"
    "                done\n"
    "                case \"$w\" in\n"
    "                    --server|--token|--token-file|--tls-ca|--tls-cert|--tls-key|--context)\n"
    "                        conn+=(\"$w\" \"$v\") ;;\n"
    "                esac\n"
    "            elif [[ $w == --server=* || $w == --token-file=* || $w == --context=* ]]; then\n"
    "                conn+=(\"$w\")\n"
    "            fi\n"
    "            continue\n"
    "        fi\n"
    "        if [[ -z $key ]]; then\n"
    "            key=$w\n"
    "            [[ $_fluxion_groups == *\" $w \"* ]] || done=1\n"
    "        elif [[ -z $done ]]; then\n"
    "            key=\"$key $w\" done=1\n"
    "        else\n"
    "            (( npos++ ))\n"
    "        fi\n"
    "    done\n"
    "    [[ -n $done ]] || sub_pending=1\n"
    "}\n"
    "_fluxion_names() {\n"
    "    \"$prog\" \"${conn[@]}\" \"$@\" -o name 2>/dev/null\n"
    "}\n";

/* ------------------------------------------------------------------ bash */

static const char BASH_MAIN[] =
    "_fluxion() {\n"
    "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"\" key npos sub_pending=\"\" kind\n"
    "    local -a words=(\"${COMP_WORDS[@]}\") conn=()\n"
    "    local cword=$COMP_CWORD base=0 prog=\"${COMP_WORDS[0]}\"\n"
    "    (( COMP_CWORD > 0 )) && prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
    "    [[ $prev == = ]] && (( COMP_CWORD > 1 )) && prev=\"${COMP_WORDS[COMP_CWORD-2]}\"\n"
    "    COMPREPLY=()\n"
    "    _fluxion_walk\n"
    "    if [[ $prev == -?* ]]; then\n"
    "        kind=$(_fluxion_opt_kind \"$key\" \"$prev\")\n"
    "        case \"$kind\" in\n"
    "            file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
    "            output) COMPREPLY=($(compgen -W \"$_fluxion_outputs\" -- \"$cur\")); return ;;\n"
    "            context) COMPREPLY=($(compgen -W \"$(_fluxion_names config get-contexts)\" "
    "-- \"$cur\")); return ;;\n"
    "            value) return ;;\n"
    "        esac\n"
    "    fi\n"
    "    if [[ $cur == -* ]]; then\n"
    "        COMPREPLY=($(compgen -W \"$(_fluxion_opts \"$key\") $_fluxion_globals\" -- "
    "\"$cur\"))\n"
    "    elif [[ -z $key ]]; then\n"
    "        COMPREPLY=($(compgen -W \"$_fluxion_tops\" -- \"$cur\"))\n"
    "    elif [[ -n $sub_pending ]]; then\n"
    "        COMPREPLY=($(compgen -W \"$(_fluxion_subs \"$key\")\" -- \"$cur\"))\n"
    "    else\n"
    "        kind=$(_fluxion_pos \"$key\" \"$npos\")\n"
    "        case \"$kind\" in\n"
    "            file) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
    "            names\\ *) COMPREPLY=($(compgen -W \"$(_fluxion_names ${kind#names })\" "
    "-- \"$cur\")) ;;\n"
    "        esac\n"
    "    fi\n"
    "}\n"
    "complete -F _fluxion fluxion\n";

/* ------------------------------------------------------------------- zsh */

/* zsh's own completion system: commands and subcommands with their
 * summaries (_describe), files (_files). */
static void emit_described(FILE *f, const char *var, const cli_command *cmd, size_t skip)
{
    char summary[160];
    snprintf(summary, sizeof summary, "%s", cmd->summary);
    fprintf(f, "    %s+=('", var);
    for (const char *p = cmd->name + skip; *p; p++)
        fputs(*p == ':' ? "\\:" : (char[]){*p, 0}, f);
    fputc(':', f);
    for (const char *p = summary; *p; p++)
        fputs(*p == '\'' ? "'\\''" : (char[]){*p, 0}, f);
    fputs("')\n", f);
}

static void emit_zsh_tables(FILE *f)
{
    fputs("_fluxion_describe_tops() {\n    local -a cmds\n", f);
    for (size_t k = 0; k < cli_n_groups; k++)
        fprintf(f, "    cmds+=('%s:%s commands')\n", cli_groups[k].word, cli_groups[k].word);
    for (size_t t = 0; t < cli_n_tops; t++)
        for (size_t i = 0; i < *cli_tops[t].n; i++)
            emit_described(f, "cmds", &cli_tops[t].table[i], 0);
    fputs("    _describe -t commands 'fluxion command' cmds\n}\n", f);
    fputs("_fluxion_describe_subs() {\n    local -a subs\n    case \"$1\" in\n", f);
    for (size_t k = 0; k < cli_n_groups; k++) {
        const cli_group *g = &cli_groups[k];
        fprintf(f, "    %s)\n", g->word);
        for (size_t i = 0; i < *g->n; i++)
            emit_described(f, "subs", &g->table[i], strlen(g->word) + 1);
        fputs("    ;;\n", f);
    }
    fputs("    esac\n    _describe -t subcommands \"fluxion $1 subcommand\" subs\n}\n", f);
}

static const char ZSH_MAIN[] =
    "_fluxion() {\n"
    "    local cur=\"${words[CURRENT]}\" prev=\"${words[CURRENT-1]}\" key npos sub_pending=\"\" "
    "kind\n"
    "    local -a conn\n"
    "    local cword=$CURRENT base=1 prog=\"${words[1]}\"\n"
    "    _fluxion_walk\n"
    "    if [[ $prev == -?* ]]; then\n"
    "        kind=$(_fluxion_opt_kind \"$key\" \"$prev\")\n"
    "        case \"$kind\" in\n"
    "            file) _files; return ;;\n"
    "            output) compadd -- ${=_fluxion_outputs}; return ;;\n"
    "            context) compadd -- ${(f)\"$(_fluxion_names config get-contexts)\"}; return ;;\n"
    "            value) return ;;\n"
    "        esac\n"
    "    fi\n"
    "    if [[ $cur == -* ]]; then\n"
    "        compadd -- ${=$(_fluxion_opts \"$key\")} ${=_fluxion_globals}\n"
    "    elif [[ -z $key ]]; then\n"
    "        _fluxion_describe_tops\n"
    "    elif [[ -n $sub_pending ]]; then\n"
    "        _fluxion_describe_subs \"$key\"\n"
    "    else\n"
    "        kind=$(_fluxion_pos \"$key\" \"$npos\")\n"
    "        case \"$kind\" in\n"
    "            file) _files ;;\n"
    "            names\\ *) compadd -- ${(f)\"$(_fluxion_names ${=kind#names })\"} ;;\n"
    "        esac\n"
    "    fi\n"
    "}\n"
    "if [[ $funcstack[1] == _fluxion ]]; then\n"
    "    _fluxion \"$@\"\n"
    "elif (( $+functions[compdef] )); then\n"
    "    compdef _fluxion fluxion\n"
    "fi\n";

/* --------------------------------------------------------------- command */

static int cmd_completion(cli_ctx *c, const cli_args *a)
{
    (void)c;
    static const char *const SHELLS[] = {"bash", "zsh"};
    const char *shell = a->pos[0];
    bool zsh = !strcmp(shell, "zsh");
    if (!zsh && strcmp(shell, "bash"))
        return cli_unknown("completion: unknown shell", shell, "", SHELLS, 2,
                           "fluxion completion --help: bash or zsh");
    if (zsh)
        fputs("#compdef fluxion\n", stdout);
    printf("# %s completion for fluxion, written by `fluxion completion %s` from its command\n"
           "# tables. Install: %s\n",
           shell, shell,
           zsh ? "fluxion completion zsh > \"${fpath[1]}/_fluxion\" (or, in ~/.zshrc after\n"
                 "# compinit: source <(fluxion completion zsh))"
               : "source <(fluxion completion bash) in ~/.bashrc, or\n"
                 "# fluxion completion bash > /etc/bash_completion.d/fluxion");
    emit_data(stdout);
    fputs(WALK, stdout);
    if (zsh) {
        emit_zsh_tables(stdout);
        fputs(ZSH_MAIN, stdout);
    } else {
        fputs(BASH_MAIN, stdout);
    }
    if (fflush(stdout))
        return cli_local_error("stdout: write error");
    return CLI_OK;
}

const cli_command cli_completion_commands[] = {
    {"completion",
     "bash|zsh",
     "print a shell completion script (commands, options, model and other names)",
     "bash: source <(fluxion completion bash)  (in ~/.bashrc), or save it as\n"
     "      /etc/bash_completion.d/fluxion\n"
     "zsh:  fluxion completion zsh > \"${fpath[1]}/_fluxion\"  (then compinit), or\n"
     "      source <(fluxion completion zsh)  in ~/.zshrc after compinit\n"
     "Names (models, datasets, jobs, teams, contexts) are asked of the server the\n"
     "command line names, with `fluxion ... list -o name`.\n",
     1,
     1,
     {{0}},
     cmd_completion},
};
const size_t cli_n_completion_commands =
    sizeof cli_completion_commands / sizeof cli_completion_commands[0];
