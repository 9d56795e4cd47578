/* Fuzz target: address parsing (IP literals, names, Unix paths) and reporting. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct addr a;
    const char *cause;
    char text[512], out[300];

    if (size == 0 || size >= sizeof text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    int port = data[0] < 128 ? -1 : data[0] * 257;
    if (addr_parse_ip(text, port, &a, &cause) == 0) {
        if (a.kind == ADDR_IP) {
            json_t *j = addr_to_json((struct sockaddr *)&a.sa, a.salen);
            if (j == NULL)
                abort();
            json_decref(j);
            addr_str((struct sockaddr *)&a.sa, a.salen, out, sizeof out);
        } else if (a.kind != ADDR_NAME) {
            abort();
        }
    }
    if (addr_parse_unix(text, &a, &cause) == 0) {
        json_t *j = addr_to_json((struct sockaddr *)&a.sa, a.salen);
        json_decref(j);
    }
    return 0;
}
