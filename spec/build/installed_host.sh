#!/bin/sh
# A host built against the INSTALLED tree, as a user builds it: install
# into a staging directory (make install DESTDIR=...), then
#   cc scripts/embed_lua.c $(pkg-config --cflags --libs kvbm-lua lua5.4)
# with pkg-config pointed at the staged .pc files only, and run it: it
# embeds Lua (luaL_requiref), hands it a manager made in C and runs a chunk.
src=${KVBM_SRCDIR:-.}
build=${KVBM_BUILDDIR:-.}
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
fail() { # $1: what, $2: a log to show; ends the test
  n=$((n + 1))
  echo "not ok $n - $1"
  [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 30 "$2" | sed 's/^/# /'
  echo "1..$n"
  exit 1
}
if ! command -v pkg-config >/dev/null 2>&1; then
  echo "1..0 # SKIP pkg-config not found"
  exit 0
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/kvbm-install.XXXXXX") || fail "mktemp"
trap 'rm -rf "$stage"' EXIT
log=$stage/log

# a make of its own (not the jobs of the make check that runs this)
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL ${KVBM_MAKE:-make} -C "$build" install DESTDIR="$stage/root" \
  >"$log" 2>&1 || fail "make install DESTDIR=..." "$log"
ok "make install DESTDIR=... (libdir $KVBM_LIBDIR)"

pcdir=$stage/root$KVBM_LIBDIR/pkgconfig
for pc in kvbm kvbm-lua; do
  [ -f "$pcdir/$pc.pc" ] || fail "$pc.pc installed in \$(libdir)/pkgconfig"
done
# the staged .pc files first (the system's for what they require), their
# paths under the stage
kvbm_flags=$(PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH} PKG_CONFIG_SYSROOT_DIR=$stage/root \
  pkg-config --cflags --libs kvbm-lua 2>"$log") || fail "pkg-config --cflags --libs kvbm-lua" "$log"
lua_flags=$(pkg-config --cflags --libs "${KVBM_LUA_PC:-lua5.4}" 2>"$log") ||
  fail "pkg-config --cflags --libs ${KVBM_LUA_PC:-lua5.4}" "$log"
ok "pkg-config --cflags --libs kvbm-lua ${KVBM_LUA_PC:-lua5.4}: $kvbm_flags $lua_flags"

# shellcheck disable=SC2086
${KVBM_CC:-cc} $KVBM_SANITIZERS -o "$stage/host" "$src/scripts/embed_lua.c" $kvbm_flags $lua_flags \
  >"$log" 2>&1 || fail "cc embed_lua.c against the installed headers and libraries" "$log"
ok "cc embed_lua.c against the installed headers and libraries"

libdir=$stage/root$KVBM_LIBDIR
resolved=$(LD_LIBRARY_PATH=$libdir ldd "$stage/host" | awk '/libkvbm/ { print $3 }')
case $resolved in
  "$libdir"/*) ok "the host loads libkvbm-lua and libkvbm from the installed tree" ;;
  *) echo "# resolved: $resolved"; fail "the host loads libkvbm-lua and libkvbm from the installed tree" ;;
esac

LD_LIBRARY_PATH=$libdir "$stage/host" >"$log" 2>&1
status=$?
sed 's/^/# host: /' "$log"
if [ "$status" -eq 0 ] && grep -q '^1\.\.6$' "$log" && ! grep -q '^not ok' "$log"; then
  ok "the installed host embeds Lua, hands it a C manager and runs a chunk"
else
  fail "the installed host embeds Lua, hands it a C manager and runs a chunk (exit $status)"
fi
echo "1..$n"
