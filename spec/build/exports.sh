#!/bin/sh
# Each library exports only its own prefix (nm -D on the built .so files):
#   libkvbm       kvbm_*  (and nothing of kvbm_nats_ / kvbm_lua_ / kvbm__)
#   libkvbm-nats  kvbm_nats_*
#   libkvbm-lua   luaopen_kvbm and kvbm_lua_*
#   kvbm.so       luaopen_kvbm only
# and the core needs neither libnats nor Lua.
libs="${KVBM_BUILDDIR:-.}/.libs"
nm=${KVBM_NM:-nm}
case $nm in no | "") nm=nm ;; esac
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; }

# defined dynamic symbols of $1 (code and data), one a line
exports() { $nm -D --defined-only "$1" | awk 'NF >= 3 && $2 ~ /^[TDBRVWi]$/ { print $3 }' | sort -u; }

check() { # $1: file, $2: what, $3: ERE every export must match, $4: ERE none may match
  if [ ! -f "$1" ]; then
    not_ok "$2: $1 not built"
    return
  fi
  all=$(exports "$1")
  bad=$(printf '%s\n' "$all" | grep -Ev "$3" | grep -v '^$')
  [ -n "$4" ] && bad="$bad$(printf '%s\n' "$all" | grep -E "$4")"
  count=$(printf '%s\n' "$all" | grep -c .)
  if [ -z "$bad" ] && [ "$count" -gt 0 ]; then
    ok "$2 exports only its prefix ($count symbols)"
  else
    not_ok "$2 exports only its prefix"
    printf '%s\n' "$bad" | sed 's/^/# unexpected: /'
  fi
}

check "$libs/libkvbm.so" libkvbm '^kvbm_' '^(kvbm_nats_|kvbm_lua_|kvbm__)'
check "$libs/libkvbm-lua.so" libkvbm-lua '^(luaopen_kvbm|kvbm_lua_[a-z_]+)$' ''
check "$libs/kvbm.so" kvbm.so '^luaopen_kvbm$' ''
if [ "${KVBM_WITH_NATS:-yes}" = yes ]; then
  check "$libs/libkvbm-nats.so" libkvbm-nats '^kvbm_nats_' ''
else
  n=$((n + 1))
  echo "ok $n - # SKIP libkvbm-nats: built without NATS"
fi

# one-way dependencies: the core links neither libnats nor Lua nor the others
needed=$(objdump -p "$libs/libkvbm.so" 2>/dev/null | awk '$1 == "NEEDED" { print $2 }')
if [ -n "$needed" ] && ! printf '%s\n' "$needed" | grep -Eq 'nats|lua|kvbm'; then
  ok "libkvbm needs no libnats, no Lua ($(echo $needed))"
else
  not_ok "libkvbm needs no libnats, no Lua"
  printf '%s\n' "$needed" | sed 's/^/# NEEDED /'
fi
needed=$(objdump -p "$libs/libkvbm-lua.so" 2>/dev/null | awk '$1 == "NEEDED" { print $2 }')
if printf '%s\n' "$needed" | grep -q '^libkvbm\.so' && ! printf '%s\n' "$needed" | grep -q 'liblua'; then
  ok "libkvbm-lua needs libkvbm and leaves Lua to the host"
else
  not_ok "libkvbm-lua needs libkvbm and leaves Lua to the host"
  printf '%s\n' "$needed" | sed 's/^/# NEEDED /'
fi
echo "1..$n"
[ "$fails" -eq 0 ]
