/* Fuzz target: the configuration parser (every directive, policy rules included). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "conf.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf c;
    char *cause = NULL;
    conf_defaults(&c);
    if (conf_parse((const char *)data, size, &c, &cause) < 0 && cause == NULL)
        abort(); /* every refusal names its line */
    free(cause);
    conf_free(&c);
    return 0;
}
