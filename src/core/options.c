/*
 * The runtime's options in one table (mimalloc's options.c): each with the weft_config_t field that
 * sets it, its environment variable, its default and the values it may take. weft_start resolves each
 * once: an explicit config value wins over the environment, which wins over the default; an
 * environment value that does not parse, or is out of range, is ignored. docs/runtime.md lists the
 * same table, and a test checks that every option here is there.
 */
#include <stdlib.h>

#include "core/internal.h"

static bool parse_long(const char *s, int64_t *v)
{
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || *end != '\0')
        return false;
    *v = x;
    return true;
}

static bool parse_size(const char *s, int64_t *v)
{
    size_t x = weft__parse_size(s); /* 65536, 256k, 1M; 0 when it does not parse */
    if (x == 0 || x > INT64_MAX)
        return false;
    *v = (int64_t)x;
    return true;
}

static const weft__option options[WEFT__OPTIONS_] = {
    [WEFT__OPT_WORKERS] = {"workers", "WEFT_WORKERS", WEFT__OPT_FROM_MACHINE, 1, WEFT__MAX_WORKERS, parse_long},
    [WEFT__OPT_STACK_SIZE] = {"stack_size", "WEFT_STACK_SIZE", (int64_t)128 << 10, 1, (int64_t)1 << 30, parse_size},
    [WEFT__OPT_SPIN_US] = {"spin_us", "WEFT_SPIN_US", 50, INT64_MIN, INT64_MAX, parse_long},
    [WEFT__OPT_BLOCKING_THREADS] = {"blocking_threads", "WEFT_BLOCKING_THREADS", 256, 1, INT32_MAX, parse_long},
    [WEFT__OPT_STUCK_US] = {"stuck_us", "WEFT_STUCK_US", 10000, INT64_MIN, INT64_MAX, parse_long},
};

const weft__option *weft__option_info(int i)
{
    return i >= 0 && i < WEFT__OPTIONS_ ? &options[i] : NULL;
}

int64_t weft__option_value(int i, int64_t configured)
{
    const weft__option *o = &options[i];
    if (configured != 0)
        return configured; /* checked by weft_start against what weft_config_t allows */
    const char *s = getenv(o->env);
    int64_t v;
    if (s && *s && o->parse(s, &v) && v >= o->min && v <= o->max)
        return v;
    return o->dflt;
}
