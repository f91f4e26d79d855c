/*
 * The context switch (src/arch): every callee-saved register and the floating-point control state
 * survive a switch, whatever the other context did to them; a new context starts on an aligned stack
 * with the default floating-point state; and through the runtime, each fiber keeps its own rounding mode
 * and its live values across yields.
 *
 * The register checks use small assembly probes (test/arch/probe_<arch>.S): C cannot pin values in
 * callee-saved registers across a call, since the compiler is free to assume the call preserves them.
 */
#include <fenv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "arch/switch.h"
#include "obs/sanitize.h"
#include "runner.h"

void probe_switch(void **save_sp, void *to_sp, uint64_t *out, uint64_t fp1, uint64_t fp2);
void clobber_switch(void **save_sp, void *to_sp);
uintptr_t probe_caller_sp(void);

#define STACK_BYTES (256 << 10)

static void *main_sp, *other_sp;
static volatile uintptr_t entry_sp;
static volatile int entry_round;
static volatile void *entry_arg;

/* The other context: on every visit, garbage in every register, then straight back. */
static void other_entry(void *arg)
{
    entry_arg = arg;
    entry_sp = probe_caller_sp();
    entry_round = fegetround();
    for (;;)
        clobber_switch(&other_sp, main_sp);
}

/* Raw switches are invisible to the sanitizers' stack tracking, which the runtime feeds on every switch
 * (src/obs/sanitize.h); these checks of the assembly alone run in the plain builds (gcc, clang, aarch64). */
#if WEFT_ASAN || WEFT_TSAN
#define RAW_SWITCH_OK 0
#else
#define RAW_SWITCH_OK 1
#endif

static char *new_stack(void)
{
    char *s = aligned_alloc(64, STACK_BYTES);
    ASSERT(s != NULL);
    return s;
}

TEST(callee_saved_registers_and_fp_control_survive_a_switch)
{
    if (!RAW_SWITCH_OK)
        return;
    char *stack = new_stack();
    other_sp = weft__ctx_make(stack + STACK_BYTES, other_entry, (void *)0x5eed);
    for (int round = 0; round < 1000; round++) {
#if defined(__x86_64__)
        static const uint32_t mxcsr[] = {0x1f80, 0x3f80, 0x5f80, 0x7f80};   /* the four rounding modes */
        static const uint16_t x87cw[] = {0x037f, 0x077f, 0x0b7f, 0x0f7f};
        uint64_t out[8], want_mx = mxcsr[round % 4], want_cw = x87cw[(round / 4) % 4];
        probe_switch(&main_sp, other_sp, out, want_mx, want_cw);
        static const char *const names[] = {"rbx", "r12", "r13", "r14", "r15", "rbp"};
        static const uint64_t loaded[] = {0x1111111111111111ull, 0x1212121212121212ull, 0x1313131313131313ull,
                                          0x1414141414141414ull, 0x1515151515151515ull, 0x1616161616161616ull};
        for (int i = 0; i < 6; i++) {
            uint64_t want = loaded[i];
            if (out[i] != want)
                FAIL("round %d: %s is %#llx after the switch, want %#llx", round, names[i],
                     (unsigned long long)out[i], (unsigned long long)want);
        }
        ASSERT_EQ(out[6], want_mx);
        ASSERT_EQ(out[7] & 0xffff, want_cw);
#elif defined(__aarch64__)
        static const uint64_t fpcr[] = {0, 0x400000, 0x800000, 0xc00000}; /* the four rounding modes */
        uint64_t out[19];
        probe_switch(&main_sp, other_sp, out, fpcr[round % 4], 0);
        for (int i = 0; i < 10; i++)
            if (out[i] != 0x1000u + 19 + (unsigned)i)
                FAIL("round %d: x%d is %#llx after the switch", round, 19 + i, (unsigned long long)out[i]);
        for (int i = 0; i < 8; i++)
            if (out[10 + i] != 0x1000u + 19 + (unsigned)i)
                FAIL("round %d: d%d is %#llx after the switch", round, 8 + i, (unsigned long long)out[10 + i]);
        ASSERT_EQ(out[18], fpcr[round % 4]);
#else
#error "no register probe for this architecture"
#endif
    }
    ASSERT_PTR_EQ(entry_arg, (void *)0x5eed);
    free(stack);
}

TEST(a_new_context_starts_aligned_with_the_default_rounding_mode)
{
    if (!RAW_SWITCH_OK)
        return;
    char *stack = new_stack();
    /* an odd top: make must align it itself */
    other_sp = weft__ctx_make(stack + STACK_BYTES - 40 - 3, other_entry, NULL);
    ASSERT_EQ(fesetround(FE_TOWARDZERO), 0);
    clobber_switch(&main_sp, other_sp); /* runs other_entry up to its first switch back */
    ASSERT_EQ(fegetround(), FE_TOWARDZERO); /* ours came back */
    ASSERT_EQ(fesetround(FE_TONEAREST), 0);
    ASSERT_EQ(entry_sp % 16, 0);
    ASSERT_EQ(entry_round, FE_TONEAREST); /* not the creator's mode */
    ASSERT((char *)entry_sp > stack && (char *)entry_sp <= stack + STACK_BYTES);
    free(stack);
}

/* ------------------------------------------------------------------------------------------------ */
/* Through the runtime                                                                               */

static const int modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};

static void *keep_rounding_mode(void *arg)
{
    int mode = modes[(intptr_t)arg % 4];
    ASSERT_EQ(fesetround(mode), 0);
    volatile double one = 1.0, three = 3.0;
    double first = one / three; /* its last bit depends on the mode */
    for (int i = 0; i < 2000; i++) {
        weft_yield();
        if (fegetround() != mode)
            FAIL("fiber %ld: rounding mode %d after a yield, want %d", (long)(intptr_t)arg, fegetround(), mode);
        double again = one / three;
        if (memcmp(&again, &first, sizeof first) != 0)
            FAIL("fiber %ld: 1/3 rounds differently after a yield", (long)(intptr_t)arg);
    }
    return NULL;
}

TEST(each_fiber_keeps_its_own_rounding_mode)
{
    weft_config_t one = {.workers = 1};
    ASSERT_OK(weft_start(&one));
    weft_fiber_t f[8];
    for (intptr_t i = 0; i < 8; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, keep_rounding_mode, (void *)i));
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(rounding_modes_really_differ_on_this_machine)
{
    volatile double one = 1.0, three = 3.0;
    ASSERT_EQ(fesetround(FE_UPWARD), 0);
    double up = one / three;
    ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
    double down = one / three;
    ASSERT_EQ(fesetround(FE_TONEAREST), 0);
    ASSERT(up != down);
}

/* Many values live across every yield: the compiler keeps some in callee-saved registers. */
static void *live_values(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    uint64_t a = seed, b = seed * 3, c = seed * 5, d = seed * 7, e = seed * 11, g = seed * 13;
    double x = (double)(seed & 0xffff), y = x * 0.5, z = x + 0.25, w = y - z;
    for (int i = 0; i < 1000; i++) {
        a += b ^ c;
        b = b * 6364136223846793005ull + d;
        c ^= e >> 7;
        d += g;
        e = e * 2862933555777941757ull + 3037000493ull;
        g ^= a << 3;
        x = x * 0.999 + y;
        y = y * 1.001 - z;
        z = z + w * 0.5;
        w = w * 0.75 + 1.0;
        weft_yield();
    }
    uint64_t h = a ^ b ^ c ^ d ^ e ^ g;
    double s = x + y + z + w;
    uint64_t sb;
    memcpy(&sb, &s, sizeof sb);
    return (void *)(uintptr_t)(h ^ sb);
}

TEST(live_values_survive_yields_between_many_fibers)
{
    enum { N = 16 };
    /* the expected results, computed without any switch in between */
    uintptr_t want[N];
    weft_config_t one = {.workers = 1};
    ASSERT_OK(weft_start(&one));
    for (intptr_t i = 0; i < N; i++) {
        weft_fiber_t f;
        void *r;
        ASSERT_OK(weft_spawn(&f, NULL, live_values, (void *)i));
        ASSERT_OK(weft_join(f, &r)); /* alone on the worker: its yields come straight back */
        want[i] = (uintptr_t)r;
    }
    weft_fiber_t f[N];
    for (intptr_t i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, live_values, (void *)i));
    for (int i = 0; i < N; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((uintptr_t)r, want[i]);
    }
    ASSERT_OK(weft_shutdown());
}
