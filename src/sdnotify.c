#include "config.h"
/* systemd notify and socket activation: being written */
