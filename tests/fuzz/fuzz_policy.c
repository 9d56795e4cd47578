/*
 * Fuzz target: the policy matcher. The input is rules text, a NUL, then an address text and
 * credentials; the rules are parsed as a config file and the address is matched and rewritten.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "conf.h"
#include "policy.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    struct conf c;
    char *cause = NULL, text[256];
    struct addr a;
    const char *why;

    if (nul == NULL)
        return 0;
    size_t rl = (size_t)(nul - data), tl = size - rl - 1;
    if (tl < 3 || tl - 2 >= sizeof text)
        return 0;
    conf_defaults(&c);
    if (conf_parse((const char *)data, rl, &c, &cause) < 0) {
        free(cause);
        conf_free(&c);
        return 0;
    }
    const uint8_t *rest = nul + 1;
    gid_t groups[2] = {rest[1], (gid_t)rest[1] + 1};
    struct policy_who who = {rest[0], rest[1], 1, groups, 2};
    memcpy(text, rest + 2, tl - 2);
    text[tl - 2] = '\0';
    int ok = addr_parse_ip(text, -1, &a, &why) == 0 && a.kind == ADDR_IP;
    if (!ok)
        ok = addr_parse_unix(text, &a, &why) == 0;
    if (ok) {
        struct sockaddr_storage out;
        socklen_t ol;
        for (int act = POLICY_CONNECT; act <= POLICY_SENDTO; act <<= 1)
            policy_allows(c.policy, (enum policy_action)act, (struct sockaddr *)&a.sa, a.salen,
                          &who);
        if (policy_rewrite(c.policy, (struct sockaddr *)&a.sa, a.salen, &who, &out, &ol))
            policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&out, ol, &who);
        policy_canonical((struct sockaddr *)&a.sa, a.salen, &out, &ol);
    }
    conf_free(&c);
    return 0;
}
