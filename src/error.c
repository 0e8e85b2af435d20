/* error.c - names and messages of the KVBM_E* codes, from KVBM_ERRNO_MAP. */
#include "kvbm.h"

const char *kvbm_strerror(int err) {
  switch (err) {
#define XX(name, code, msg) \
  case KVBM_E##name:        \
    return msg;
    KVBM_ERRNO_MAP(XX)
#undef XX
  }
  return "unknown error";
}

const char *kvbm_err_name(int err) {
  switch (err) {
#define XX(name, code, msg) \
  case KVBM_E##name:        \
    return code;
    KVBM_ERRNO_MAP(XX)
#undef XX
  }
  return "unknown_error";
}
