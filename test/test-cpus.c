/*
 * How many workers: the CPUs the process may use (affinity), capped by its cgroup CPU quota (v1 and v2,
 * every ancestor), overridden by WEFT_WORKERS and by the config.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#include "platform/prim.h"
#include "runner.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        FAIL("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static char tmp[256];

static void remove_tree(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
}

static void make_tree(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/weft-cg-XXXXXX");
    if (!mkdtemp(tmp))
        FAIL("mkdtemp: %s", strerror(errno));
    char p[512];
    snprintf(p, sizeof p, "%s/cg2", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cg2/app", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cg2/app/web", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cg1", tmp);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cg1/job", tmp);
    mkdir(p, 0755);
}

static double quota(const char *mountinfo, const char *cgroup)
{
    char mi[512], cg[512];
    snprintf(mi, sizeof mi, "%s/mountinfo", tmp);
    snprintf(cg, sizeof cg, "%s/cgroup", tmp);
    write_file(mi, mountinfo);
    write_file(cg, cgroup);
    return weft__cgroup_cpu_quota_at(mi, cg);
}

static void set(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    write_file(p, text);
}

TEST(cgroup_v2_quota_is_read_and_the_tightest_ancestor_wins)
{
    make_tree();
    char mi[1024];
    snprintf(mi, sizeof mi, "30 23 0:27 / %s/cg2 rw,nosuid - cgroup2 cgroup2 rw\n", tmp);
    set("cg2/app/web/cpu.max", "150000 100000\n");
    set("cg2/app/cpu.max", "max 100000\n");
    double q = quota(mi, "0::/app/web\n");
    ASSERT(q > 1.49 && q < 1.51);
    set("cg2/app/cpu.max", "50000 100000\n");
    q = quota(mi, "0::/app/web\n");
    ASSERT(q > 0.49 && q < 0.51);
    set("cg2/app/cpu.max", "max 100000\n");
    set("cg2/app/web/cpu.max", "max 100000\n");
    ASSERT(quota(mi, "0::/app/web\n") == 0);
    remove_tree();
}

TEST(cgroup_v1_quota_is_read_from_the_cpu_controller)
{
    make_tree();
    char mi[1024];
    snprintf(mi, sizeof mi,
             "32 31 0:29 / %s/cg1 rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
             "33 31 0:30 / %s/other rw,relatime - cgroup cgroup rw,memory\n",
             tmp, tmp);
    set("cg1/job/cpu.cfs_quota_us", "250000\n");
    set("cg1/job/cpu.cfs_period_us", "100000\n");
    double q = quota(mi, "5:memory:/job\n4:cpu,cpuacct:/job\n");
    ASSERT(q > 2.49 && q < 2.51);
    set("cg1/job/cpu.cfs_quota_us", "-1\n");
    ASSERT(quota(mi, "4:cpu,cpuacct:/job\n") == 0);
    remove_tree();
}

TEST(no_cgroup_files_means_no_quota)
{
    make_tree();
    ASSERT(quota("", "") == 0);
    ASSERT(quota("garbage without a dash\n", "0::/\n") == 0);
    remove_tree();
}

TEST(workers_follow_the_affinity_mask)
{
    cpu_set_t set;
    ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    int n = CPU_COUNT(&set);
    ASSERT_OK(weft_start(NULL));
    double q = weft__cgroup_cpu_quota();
    int want = n;
    if (q > 0 && (int)(q + 0.999999) < want)
        want = (int)(q + 0.999999);
    ASSERT_EQ(weft_workers(), want);
    ASSERT_OK(weft_shutdown());
    /* one CPU allowed: one worker, the N:1 model */
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu(), &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    ASSERT_OK(weft_start(NULL));
    ASSERT_EQ(weft_workers(), 1);
    ASSERT_OK(weft_shutdown());
}

TEST(the_environment_and_the_config_override)
{
    setenv("WEFT_WORKERS", "3", 1);
    ASSERT_OK(weft_start(NULL));
    ASSERT_EQ(weft_workers(), 3);
    ASSERT_OK(weft_shutdown());
    weft_config_t c = {.workers = 5};
    ASSERT_OK(weft_start(&c));
    ASSERT_EQ(weft_workers(), 5);
    ASSERT_OK(weft_shutdown());
    weft_config_t bad = {.workers = -1};
    ASSERT_ERR(weft_start(&bad), -EINVAL);
}

/* A real cgroup v1 CPU quota (MACHINE.md: v1 cpu works here, v2 cpu.max is not writable). */
static int v1_quota_child(long quota_us)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/sys/fs/cgroup/cpu/weft-test-%d", (int)getpid());
    if (mkdir(dir, 0755) != 0)
        return -errno;
    char p[300];
    int rc = 0;
    snprintf(p, sizeof p, "%s/cpu.cfs_period_us", dir);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs("100000", f);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/cpu.cfs_quota_us", dir);
    f = fopen(p, "w");
    if (!f)
        rc = -errno;
    else {
        fprintf(f, "%ld", quota_us);
        fclose(f);
    }
    pid_t child = rc ? -1 : fork();
    if (child == 0) {
        snprintf(p, sizeof p, "%s/cgroup.procs", dir);
        f = fopen(p, "w");
        if (!f)
            _exit(100);
        fprintf(f, "%d", (int)getpid());
        fclose(f);
        if (weft_start(NULL) < 0)
            _exit(101);
        _exit(weft_workers());
    }
    int st = 0;
    if (child > 0)
        waitpid(child, &st, 0);
    rmdir(dir);
    return rc ? rc : (WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

TEST(a_real_cgroup_v1_quota_caps_the_workers)
{
    if (access("/sys/fs/cgroup/cpu/cgroup.procs", W_OK) != 0) {
        printf("no writable cgroup v1 cpu controller here: nothing to check\n");
        return;
    }
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    if (CPU_COUNT(&set) < 2) {
        printf("one CPU only: a quota cannot lower the count\n");
        return;
    }
    ASSERT_EQ(v1_quota_child(100000), 1); /* 1 CPU */
    ASSERT_EQ(v1_quota_child(50000), 1);  /* half a CPU still gets a worker */
    ASSERT_EQ(v1_quota_child(150000), 2); /* 1.5 CPUs: 2 workers */
}
