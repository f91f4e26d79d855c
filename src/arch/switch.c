/*
 * The context switch as an ordinary function, for callers that cannot inline it (switch.h).
 */
#include "arch/switch.h"

void weft__ctx_switch(void **save_sp, void *new_sp)
{
    weft__ctx_switch_inline(save_sp, new_sp);
}
