/* version.c - the library's own version, to compare with the headers'. */
#include "kvbm.h"

unsigned kvbm_version(void) { return KVBM_VERSION_HEX; }
const char *kvbm_version_string(void) { return KVBM_VERSION_STRING; }
