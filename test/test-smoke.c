#include <weft.h>
#include "helpers.h"
#include "runner.h"

TEST(spawn_join)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)41));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 42);
    ASSERT_OK(weft_shutdown());
}

static void *yielder(void *arg)
{
    for (int i = 0; i < 1000; i++)
        weft_yield();
    return arg;
}

TEST(many)
{
    weft_fiber_t f[100];
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, yielder, (void *)(intptr_t)i));
    for (int i = 0; i < 100; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, i);
    }
    ASSERT_OK(weft_shutdown());
}
