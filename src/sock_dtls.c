#include "config.h"
/* DTLS: being written */
