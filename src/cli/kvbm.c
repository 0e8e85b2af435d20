/*
 * kvbm - standalone Lua 5.4 interpreter with the kvbm module preloaded.
 *
 * Usage mirrors Lua's own `lua` program:
 *
 *   kvbm [options] [script [args]]
 *   kvbm sim [args]
 *
 * Options are -e, -l, -i, -v, -E, -W, -- and - with the same meaning as in
 * `lua`; the global `arg` table, LUA_INIT handling, error reporting and exit
 * status follow lua.c, so kvbm can run any Lua script (e.g. busted).
 *
 * Differences from `lua`:
 *  - the global `kvbm` (and package.loaded.kvbm) is opened before anything
 *    runs, and package.path is prefixed with the directory holding kvbm's
 *    pure-Lua modules (see lua_module_dir());
 *  - the REPL uses GNU readline (plain lines without it: noreadline.h)
 *    and prints results with kvbm.repl's `print`
 *    when that module is available;
 *  - `kvbm sim args...` runs require("kvbm.sim").main({args...}).
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_READLINE
#include <readline/readline.h>
#include <readline/history.h>
#else
#include "noreadline.h"
#endif
#include "pool_alloc.h"

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "kvbm_lua.h"

/* Absolute build directory; identifies an uninstalled (in-tree) binary. */
#ifndef KVBM_BUILDDIR
#define KVBM_BUILDDIR ""
#endif
/* Source tree's lua/ directory, used by the in-tree binary. */
#ifndef KVBM_SRC_LUADIR
#define KVBM_SRC_LUADIR ""
#endif
/* Installed location of kvbm's pure-Lua modules. */
#ifndef KVBM_LUADIR
#define KVBM_LUADIR ""
#endif

/* Marks the end of the global name in "-l mod-suffix" (loadlib.c). */
#ifndef LUA_IGMARK
#define LUA_IGMARK "-"
#endif

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define KVBM_NAME "kvbm"
#define KVBM_LUA_DIR_VAR "KVBM_LUA_DIR"

#define PROMPT1 "> "
#define PROMPT2 ">> "

#define INIT_VAR "LUA_INIT"
#define INIT_VAR_VERSION \
    INIT_VAR "_" LUA_VERSION_MAJOR "_" LUA_VERSION_MINOR

/* Registry keys of the REPL result printer and completer taken from
 * kvbm.repl, and of the completions of the word readline asks about. */
#define REPL_PRINT_KEY "kvbm_repl_print"
#define REPL_COMPLETE_KEY "kvbm_repl_complete"
#define REPL_MATCHES_KEY "kvbm_repl_matches"

/* History file, in $HOME; lines kept. */
#define HISTORY_FILE ".kvbm_history"
#define HISTORY_LINES 1000

/* Error messages are prefixed with this; NULL inside the REPL, like lua.c. */
static const char *progname = KVBM_NAME;

/* State to interrupt on SIGINT; set by docall_with() before each call. */
static lua_State *globalL = NULL;

/* ---------------------------------------------------------------------- */
/* Signals */

static void set_signal(int sig, void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(sig, &sa, NULL);
}

/* Hook installed by the signal handler: raises the error in Lua context,
 * where it is safe to do so. */
static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* SIGINT handler while a chunk runs. Restores the default action first so
 * that a second Ctrl-C kills a program stuck in C code. */
static void laction(int sig)
{
    int mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT;

    set_signal(sig, SIG_DFL);
    lua_sethook(globalL, lstop, mask, 1);
}

/* ---------------------------------------------------------------------- */
/* Messages and error handling */

static void l_message(const char *pname, const char *msg)
{
    if (pname != NULL)
        fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

/* Print the error message on top of the stack (if any) and pop it. */
static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        int top = lua_gettop(L);
        const char *msg = lua_tostring(L, -1);

        if (msg == NULL)
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, -1));
        l_message(progname, msg);
        lua_settop(L, top - 1);
    }
    return status;
}

/* Message handler: adds a traceback to the error message. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL) {
        /* An object with __tostring supplies its own message, as in lua.c. */
        if (luaL_callmeta(L, 1, "__tostring") &&
            lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Message handler for `kvbm sim`: user-facing errors are plain strings,
 * so print them without a traceback; other objects get one. */
static int sim_msghandler(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING)
        return 1;
    return msghandler(L);
}

/* Call the function below `narg` arguments with a message handler and
 * with SIGINT interrupting it. */
static int docall_with(lua_State *L, int narg, int nres,
                       lua_CFunction handler)
{
    int status;
    int base = lua_gettop(L) - narg;

    lua_pushcfunction(L, handler);
    lua_insert(L, base);
    globalL = L;
    set_signal(SIGINT, laction);
    status = lua_pcall(L, narg, nres, base);
    set_signal(SIGINT, SIG_DFL);
    /* A SIGINT that arrived just as the call ended must not hit the next
     * chunk; leave a hook set by the program itself alone. */
    if (lua_gethook(L) == lstop)
        lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

static int docall(lua_State *L, int narg, int nres)
{
    return docall_with(L, narg, nres, msghandler);
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = docall(L, 0, 0);
    return report(L, status);
}

static int dofile(lua_State *L, const char *name)
{
    return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name)
{
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* ---------------------------------------------------------------------- */
/* Version and usage */

static void print_version(lua_State *L)
{
    static const char prefix[] = KVBM_NAME " ";
    int top = lua_gettop(L);
    const char *ver = NULL;

    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, KVBM_NAME) == LUA_TTABLE &&
        lua_getfield(L, -1, "_VERSION") == LUA_TSTRING)
        ver = lua_tostring(L, -1);

    if (ver == NULL)
        printf("%s (%s)\n", KVBM_NAME, LUA_RELEASE);
    else if (strncmp(ver, prefix, sizeof prefix - 1) == 0)
        printf("%s (%s)\n", ver, LUA_RELEASE); /* already "kvbm x.y.z" */
    else
        printf("%s %s (%s)\n", KVBM_NAME, ver, LUA_RELEASE);
    fflush(stdout);
    lua_settop(L, top);
}

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: %s [options] [script [args]]\n"
            "       %s sim [TRACE] [sim options]   (%s sim --help lists them)\n"
            "With no script, an interactive REPL with the kvbm module loaded.\n"
            "Available options are:\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter interactive mode after executing 'script'\n"
            "  -l mod    require library 'mod' into global 'mod'\n"
            "  -l g=mod  require library 'mod' into global 'g'\n"
            "  -v        show version information (also --version)\n"
            "  -E        ignore environment variables\n"
            "  -W        turn warnings on\n"
            "  -h        show this help (also --help)\n"
            "  --        stop handling options\n"
            "  -         stop handling options and execute stdin\n"
            "Manual pages: kvbm(1), kvbm-sim(1).\n",
            KVBM_NAME, KVBM_NAME, KVBM_NAME);
    fflush(out);
}

static void print_usage(const char *badoption)
{
    if (badoption[1] == 'e' || badoption[1] == 'l')
        fprintf(stderr, "%s: '%s' needs argument\n", KVBM_NAME, badoption);
    else
        fprintf(stderr, "%s: unrecognized option '%s'\n", KVBM_NAME,
                badoption);
    print_help(stderr);
}

/* ---------------------------------------------------------------------- */
/* Lua module search path */

/* Same directory, following symlinks when both sides exist. */
static int same_dir(const char *a, const char *b)
{
    char *ra = realpath(a, NULL);
    char *rb = realpath(b, NULL);
    int same = (ra != NULL && rb != NULL) ? strcmp(ra, rb) == 0
                                          : strcmp(a, b) == 0;
    free(ra);
    free(rb);
    return same;
}

/* Is this binary the one in the build tree? Also accepts libtool's
 * .libs/ subdirectory, where the real executable lives. */
static int running_from_builddir(void)
{
    char exe[PATH_MAX];
    ssize_t n;
    char *slash;

    if (KVBM_BUILDDIR[0] == '\0')
        return 0;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0 || (size_t)n >= sizeof exe - 1)
        return 0;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash == NULL)
        return 0;
    if (slash == exe)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (same_dir(exe, KVBM_BUILDDIR))
        return 1;
    slash = strrchr(exe, '/');
    if (slash != NULL && slash != exe && strcmp(slash + 1, ".libs") == 0) {
        *slash = '\0';
        return same_dir(exe, KVBM_BUILDDIR);
    }
    return 0;
}

/* Directory of kvbm's pure-Lua modules, or NULL if none is known. */
static const char *lua_module_dir(int noenv)
{
    if (!noenv) {
        const char *env = getenv(KVBM_LUA_DIR_VAR);
        if (env != NULL && env[0] != '\0')
            return env;
    }
    if (KVBM_SRC_LUADIR[0] != '\0' && running_from_builddir())
        return KVBM_SRC_LUADIR;
    if (KVBM_LUADIR[0] != '\0')
        return KVBM_LUADIR;
    return NULL;
}

static void prepend_package_path(lua_State *L, int noenv)
{
    const char *dir = lua_module_dir(noenv);

    if (dir == NULL)
        return;
    if (lua_getglobal(L, "package") == LUA_TTABLE) {
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir,
                        lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
        lua_setfield(L, -3, "path");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Standard libraries, kvbm, search path; shared by all modes. */
static void open_state(lua_State *L, int noenv)
{
    luaL_checkversion(L);
    if (noenv) {
        /* Tells the package library to ignore LUA_PATH and LUA_CPATH. */
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    luaL_requiref(L, KVBM_NAME, luaopen_kvbm, 1);
    lua_pop(L, 1);
    prepend_package_path(L, noenv);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
}

/* ---------------------------------------------------------------------- */
/* Command line */

enum {
    HAS_ERROR = 1, /* bad option */
    HAS_I = 2,     /* -i */
    HAS_V = 4,     /* -v */
    HAS_E = 8,     /* -e */
    HAS_NOENV = 16, /* -E */
    HAS_HELP = 32   /* -h, --help */
};

/* Scan the options. Sets *first to the index of the script (0 if none),
 * or of the offending option on error. */
static int collectargs(char **argv, int *first)
{
    int args = 0;
    int i;

    *first = 0;
    if (argv[0] == NULL)
        return 0;
    for (i = 1; argv[i] != NULL; i++) {
        const char *opt = argv[i];

        *first = i;
        if (opt[0] != '-')
            return args; /* script name */
        switch (opt[1]) {
        case '\0': /* "-": script is stdin */
            return args;
        case '-': /* "--", "--help", "--version" */
            if (strcmp(opt, "--help") == 0)
                return HAS_HELP;
            if (strcmp(opt, "--version") == 0) {
                args |= HAS_V;
                break;
            }
            if (opt[2] != '\0')
                return HAS_ERROR;
            *first = argv[i + 1] != NULL ? i + 1 : 0;
            return args;
        case 'h':
            return opt[2] != '\0' ? HAS_ERROR : HAS_HELP;
        case 'E':
            if (opt[2] != '\0')
                return HAS_ERROR;
            args |= HAS_NOENV;
            break;
        case 'W':
            if (opt[2] != '\0')
                return HAS_ERROR;
            break;
        case 'i':
        case 'v':
            if (opt[2] != '\0')
                return HAS_ERROR;
            args |= opt[1] == 'i' ? (HAS_I | HAS_V) : HAS_V;
            break;
        case 'e':
        case 'l':
            if (opt[1] == 'e')
                args |= HAS_E;
            if (opt[2] == '\0') { /* argument is the next word */
                i++;
                if (argv[i] == NULL || argv[i][0] == '-')
                    return HAS_ERROR;
            }
            break;
        default:
            return HAS_ERROR;
        }
    }
    *first = 0;
    return args;
}

/* arg[0] is the script (or the program name when there is no script);
 * arguments before it get negative indices. */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
    int i;
    int narg = argc - (script + 1);

    lua_createtable(L, narg > 0 ? narg : 0, script + 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* -l [g=]mod: global g (default: mod up to a '-') = require(mod). */
static int dolibrary(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    const char *modname;
    size_t globlen;
    int status;

    if (eq != NULL) {
        globlen = (size_t)(eq - spec);
        modname = eq + 1;
    } else {
        const char *mark = strchr(spec, *LUA_IGMARK);
        globlen = mark != NULL ? (size_t)(mark - spec) : strlen(spec);
        modname = spec;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    status = docall(L, 1, 1);
    if (status == LUA_OK) {
        lua_pushlstring(L, spec, globlen);
        lua_insert(L, -2);
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return report(L, status);
}

/* Run -e, -l and -W in order; 0 on failure. */
static int runargs(lua_State *L, char **argv, int n)
{
    int i;

    for (i = 1; i < n; i++) {
        int option = (unsigned char)argv[i][1];

        if (option == 'e' || option == 'l') {
            const char *extra = argv[i] + 2;
            int status;

            if (*extra == '\0')
                extra = argv[++i];
            status = option == 'e' ? dostring(L, extra, "=(command line)")
                                   : dolibrary(L, extra);
            if (status != LUA_OK)
                return 0;
        } else if (option == 'W') {
            lua_warning(L, "@on", 0);
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L)
{
    const char *name = "=" INIT_VAR_VERSION;
    const char *init = getenv(name + 1);

    if (init == NULL) {
        name = "=" INIT_VAR;
        init = getenv(name + 1);
    }
    if (init == NULL)
        return LUA_OK;
    if (init[0] == '@')
        return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* Push arg[1..#arg] as the script's varargs. */
static int pushargs(lua_State *L)
{
    int i, n;

    if (lua_getglobal(L, "arg") != LUA_TTABLE)
        luaL_error(L, "'arg' is not a table");
    n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -i);
    return n;
}

static int handle_script(lua_State *L, char **argv)
{
    const char *fname = argv[0];
    int status;

    /* "-" is stdin, unless it came after "--". */
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
        fname = NULL;
    status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

/* ---------------------------------------------------------------------- */
/* REPL */

/* Look up kvbm.repl's printer once per REPL session; without it results
 * go to the global print. */
static void load_repl_printer(lua_State *L)
{
    static const char notfound[] = "module 'kvbm.repl' not found";
    int top = lua_gettop(L);

    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REPL_PRINT_KEY);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REPL_COMPLETE_KEY);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "kvbm.repl");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        if (lua_istable(L, -1)) {
            if (lua_getfield(L, -1, "print") == LUA_TFUNCTION)
                lua_setfield(L, LUA_REGISTRYINDEX, REPL_PRINT_KEY);
            else
                lua_pop(L, 1);
            if (lua_getfield(L, -1, "complete") == LUA_TFUNCTION)
                lua_setfield(L, LUA_REGISTRYINDEX, REPL_COMPLETE_KEY);
            else
                lua_pop(L, 1);
        }
    } else {
        /* A missing module is expected; a broken one is worth saying. */
        const char *msg = lua_tostring(L, -1);
        if (msg != NULL &&
            strncmp(msg, notfound, sizeof notfound - 1) != 0)
            l_message(KVBM_NAME, lua_pushfstring(L,
                      "warning: cannot load kvbm.repl: %s", msg));
    }
    lua_settop(L, top);
}

/* Print all values on the stack. */
static void l_print(lua_State *L)
{
    int n = lua_gettop(L);
    int status;

    if (n == 0)
        return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    if (lua_getfield(L, LUA_REGISTRYINDEX, REPL_PRINT_KEY) !=
        LUA_TFUNCTION) {
        lua_pop(L, 1);
        lua_getglobal(L, "print");
    }
    lua_insert(L, 1);
    status = docall(L, n, 0);
    if (status != LUA_OK) {
        l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)",
                                            lua_tostring(L, -1)));
        lua_pop(L, 2);
    }
}

/* Push the prompt string; _PROMPT/_PROMPT2 override the defaults. */
static const char *get_prompt(lua_State *L, int firstline)
{
    if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
        lua_pop(L, 1);
        return lua_pushstring(L, firstline ? PROMPT1 : PROMPT2);
    }
    {
        const char *p = luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
        return p;
    }
}

/* Read a line and push it; 0 on end of input. */
static int pushline(lua_State *L, int firstline)
{
    const char *prompt = get_prompt(L, firstline);
    char *line = readline(prompt);

    lua_pop(L, 1); /* prompt */
    if (line == NULL)
        return 0;
    if (firstline && line[0] == '=')
        lua_pushfstring(L, "return %s", line + 1);
    else
        lua_pushstring(L, line);
    free(line);
    return 1;
}

#ifdef HAVE_READLINE
/* $HOME/.kvbm_history, or NULL without a HOME. */
static const char *history_path(void)
{
    static char path[PATH_MAX];
    const char *home = getenv("HOME");

    if (home == NULL || home[0] == '\0' ||
        (size_t)snprintf(path, sizeof path, "%s/" HISTORY_FILE, home) >= sizeof path)
        return NULL;
    return path;
}

/* Line editing: history and completion; without readline, none. */
static void save_line(const char *line)
{
    const char *path = history_path();

    if (line[0] == '\0')
        return;
    add_history(line);
    /* appended at once, so that a killed session keeps its lines too */
    if (path != NULL && append_history(1, path) != 0)
        write_history(path); /* the file did not exist */
}

/* ---------------------------------------------------------------------- */
/* Completion of Lua names (kvbm.repl.complete), never of file names */

static lua_State *completionL = NULL;

/* readline's generator: the state-th match of the list complete() left. */
static char *next_match(const char *text, int state)
{
    lua_State *L = completionL;
    int top = lua_gettop(L); /* the prompt readline shows is on the stack */
    char *match = NULL;

    (void)text;
    if (lua_getfield(L, LUA_REGISTRYINDEX, REPL_MATCHES_KEY) == LUA_TTABLE &&
        lua_rawgeti(L, -1, state + 1) == LUA_TSTRING)
        match = strdup(lua_tostring(L, -1));
    lua_settop(L, top);
    return match;
}

static int call_complete(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REPL_COMPLETE_KEY);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1))
        return 0;
    lua_setfield(L, LUA_REGISTRYINDEX, REPL_MATCHES_KEY);
    return 0;
}

static char **complete(const char *text, int start, int end)
{
    lua_State *L = completionL;
    int top = lua_gettop(L);

    (void)start, (void)end;
    rl_attempted_completion_over = 1; /* no file names when nothing fits */
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REPL_MATCHES_KEY);
    if (lua_getfield(L, LUA_REGISTRYINDEX, REPL_COMPLETE_KEY) != LUA_TFUNCTION) {
        lua_settop(L, top);
        return NULL;
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, call_complete);
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) { /* a broken completer completes nothing */
        lua_settop(L, top);
        return NULL;
    }
    lua_settop(L, top);
    return rl_completion_matches(text, next_match);
}

static void setup_line_editing(lua_State *L)
{
    rl_readline_name = KVBM_NAME;
    completionL = L;
    rl_attempted_completion_function = complete;
    /* "kvbm.hash.to" and "m:me" are one word: no break at '.' or ':' */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
    rl_completion_append_character = '\0';
    if (history_path() != NULL) {
        read_history(history_path());
        history_truncate_file(history_path(), HISTORY_LINES);
    }
}
#else
static void save_line(const char *line) { (void)line; }
static void setup_line_editing(lua_State *L) { (void)L; }
#endif /* HAVE_READLINE */

/* Syntax error at <eof>: the chunk may continue on the next line. */
static int incomplete(lua_State *L, int status)
{
    static const char mark[] = "<eof>";
    const size_t marklen = sizeof mark - 1;

    if (status == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);

        if (len >= marklen && strcmp(msg + len - marklen, mark) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

/* Try the line as an expression ("return <line>"). */
static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");

    if (status == LUA_OK) {
        lua_remove(L, -2); /* modified line */
        save_line(line);
    } else {
        lua_pop(L, 2); /* error and modified line */
    }
    return status;
}

/* Compile the line as a statement, reading more lines while incomplete. */
static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *chunk = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, chunk, len, "=stdin");

        if (!incomplete(L, status) || !pushline(L, 0)) {
            save_line(chunk);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Read and compile one chunk; -1 on end of input. Leaves the compiled
 * function or an error message on the stack. */
static int loadline(lua_State *L)
{
    int status;

    lua_settop(L, 0);
    if (!pushline(L, 1))
        return -1;
    status = addreturn(L);
    if (status != LUA_OK)
        status = multiline(L);
    lua_remove(L, 1); /* line */
    return status;
}

static void doREPL(lua_State *L)
{
    const char *oldprogname = progname;
    int status;

    progname = NULL; /* no program name on errors inside the REPL */
    load_repl_printer(L);
    setup_line_editing(L);
    while ((status = loadline(L)) != -1) {
        if (status == LUA_OK)
            status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            l_print(L);
        else
            report(L, status);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    progname = oldprogname;
}

/* ---------------------------------------------------------------------- */
/* Entry points */

/* Interpreter mode; runs protected. Returns a boolean: success. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script;
    int args = collectargs(argv, &script);
    int optlim = script > 0 ? script : argc;

    lua_settop(L, 0);
    if (args == HAS_ERROR) {
        print_usage(argv[script]);
        return 0;
    }
    if (args == HAS_HELP) {
        print_help(stdout);
        lua_pushboolean(L, 1);
        return 1;
    }
    open_state(L, args & HAS_NOENV);
    createargtable(L, argv, argc, script);
    if (args & HAS_V)
        print_version(L);
    if (!(args & HAS_NOENV) && handle_luainit(L) != LUA_OK)
        return 0;
    if (!runargs(L, argv, optlim))
        return 0;
    if (script > 0 && handle_script(L, argv + script) != LUA_OK)
        return 0;
    if (args & HAS_I) {
        doREPL(L);
    } else if (script < 1 && !(args & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) {
            print_version(L);
            doREPL(L);
        } else if (dofile(L, NULL) != LUA_OK) {
            return 0;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* require("kvbm.sim").main(args); the args table is the only argument. */
static int sim_run(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "kvbm.sim");
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1) || lua_getfield(L, -1, "main") != LUA_TFUNCTION)
        return luaL_error(L, "module 'kvbm.sim' has no function 'main'");
    lua_pushvalue(L, 1);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L) - 2; /* results above args and the module */
}

/* `kvbm sim ...`; runs protected. Returns a boolean: success. */
static int psim(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int i, status, nres;

    lua_settop(L, 0);
    open_state(L, 0);
    createargtable(L, argv, argc, 1); /* arg[0] = "sim", like a script */
    lua_pushcfunction(L, sim_run);
    lua_createtable(L, argc - 2, 0);
    for (i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    status = docall_with(L, 1, LUA_MULTRET, sim_msghandler);
    if (report(L, status) != LUA_OK)
        return 0;
    /* main returns ok [, exit status]: 2 for bad options or input */
    nres = lua_gettop(L);
    if (nres >= 2 && lua_isinteger(L, 2))
        lua_pushinteger(L, lua_tointeger(L, 2));
    else
        lua_pushinteger(L, nres == 0 || lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE);
    return 1;
}

static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: PANIC: unprotected error in call to Lua API (%s)\n", KVBM_NAME,
            msg ? msg : "error object is not a string");
    return 0; /* Lua aborts */
}

/* Lua warnings (warn, -W): off until "@on"; a message may come in pieces
 * (tocont). state: bit 0 on, bit 1 inside a message. */
static void warnf(void *ud, const char *msg, int tocont)
{
    int *state = ud;
    if (!(*state & 2) && !tocont && *msg == '@') { /* a control message */
        if (strcmp(msg, "@on") == 0)
            *state |= 1;
        else if (strcmp(msg, "@off") == 0)
            *state &= ~1;
        return;
    }
    if (*state & 1) {
        if (!(*state & 2))
            fputs("Lua warning: ", stderr);
        fputs(msg, stderr);
        if (!tocont)
            fputs("\n", stderr);
        fflush(stderr);
    }
    *state = tocont ? *state | 2 : *state & ~2;
}

int main(int argc, char **argv)
{
    /* what luaL_newstate makes, on the program's allocator (pool_alloc.c) */
    static kvbm_pool pool;
    static int warn_state;
    kvbm_pool_init(&pool);
    lua_State *L = lua_newstate(kvbm_pool_alloc, &pool);
    int status, ok;

    if (L == NULL) {
        l_message(KVBM_NAME, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_atpanic(L, panic);
    lua_setwarnf(L, warnf, &warn_state);
    lua_gc(L, LUA_GCSTOP); /* restarted once the libraries are open */
    if (argc >= 2 && strcmp(argv[1], "sim") == 0)
        lua_pushcfunction(L, psim);
    else
        lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    status = lua_pcall(L, 2, 1, 0);
    if (lua_isinteger(L, -1)) /* psim: the exit status itself */
        ok = (int)lua_tointeger(L, -1);
    else
        ok = lua_toboolean(L, -1) ? EXIT_SUCCESS : EXIT_FAILURE;
    report(L, status);
    lua_close(L); /* runs finalizers and __close */
    kvbm_pool_free(&pool);
    return status == LUA_OK ? ok : EXIT_FAILURE;
}
