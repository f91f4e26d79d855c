/*
 * How many CPUs this process may use: the CPUs in its affinity mask, capped by its cgroup CPU quota
 * (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), over every ancestor cgroup.
 * A quota of 1.5 CPUs gives 2 workers: ceil, since half a CPU of a worker is still worth having.
 */
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform/prim.h"

int weft__affinity_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Find the mount point and mount root of the cgroup v2 hierarchy (v2 != 0) or of the v1 hierarchy
 * that carries the "cpu" controller. */
static int find_mount(const char *mountinfo, int v2, char *point, size_t plen, char *root, size_t rlen)
{
    FILE *f = fopen(mountinfo, "re");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        /* id parent major:minor root mountpoint options... - fstype source superoptions */
        char mroot[1024], mpoint[1024], fstype[64], super[1024];
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        if (sscanf(line, "%*s %*s %*s %1023s %1023s", mroot, mpoint) != 2)
            continue;
        if (sscanf(dash + 3, "%63s %*s %1023s", fstype, super) < 1)
            continue;
        if (v2) {
            if (strcmp(fstype, "cgroup2") != 0)
                continue;
        } else {
            if (strcmp(fstype, "cgroup") != 0)
                continue;
            int has_cpu = 0;
            for (char *save = NULL, *tok = strtok_r(super, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if (strcmp(tok, "cpu") == 0)
                    has_cpu = 1;
            if (!has_cpu)
                continue;
        }
        snprintf(point, plen, "%s", mpoint);
        snprintf(root, rlen, "%s", mroot);
        found = 0;
    }
    fclose(f);
    return found;
}

/* The process's cgroup path in the v2 hierarchy (v2 != 0) or in the v1 "cpu" hierarchy. */
static int find_cgroup(const char *cgroup, int v2, char *path, size_t len)
{
    FILE *f = fopen(cgroup, "re");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        const char *ctrls = c1 + 1, *p = c2 + 1;
        if (v2) {
            if (strcmp(line, "0") != 0 || *ctrls != '\0')
                continue;
        } else {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", ctrls);
            int has_cpu = 0;
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if (strcmp(tok, "cpu") == 0)
                    has_cpu = 1;
            if (!has_cpu)
                continue;
        }
        snprintf(path, len, "%s", p);
        found = 0;
    }
    fclose(f);
    return found;
}

static int read_line(const char *dir, const char *file, char *buf, size_t len)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/%s", dir, file) >= (int)sizeof p)
        return -1;
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    return ok ? 0 : -1;
}

/* Quota in CPUs of one cgroup directory, or 0 when it sets none. */
static double dir_quota(int v2, const char *dir)
{
    char buf[128];
    if (v2) {
        if (read_line(dir, "cpu.max", buf, sizeof buf) != 0)
            return 0;
        char q[32];
        long long period = 0;
        if (sscanf(buf, "%31s %lld", q, &period) != 2 || strcmp(q, "max") == 0 || period <= 0)
            return 0;
        long long quota = atoll(q);
        return quota > 0 ? (double)quota / (double)period : 0;
    }
    long long quota, period;
    if (read_line(dir, "cpu.cfs_quota_us", buf, sizeof buf) != 0 || sscanf(buf, "%lld", &quota) != 1)
        return 0;
    if (read_line(dir, "cpu.cfs_period_us", buf, sizeof buf) != 0 || sscanf(buf, "%lld", &period) != 1)
        return 0;
    return quota > 0 && period > 0 ? (double)quota / (double)period : 0;
}

/* The tightest quota from the process's cgroup up to the root of the hierarchy it can see. */
static double hierarchy_quota(const char *mountinfo, const char *cgroup, int v2)
{
    char point[1024], root[1024], cg[2048];
    if (find_mount(mountinfo, v2, point, sizeof point, root, sizeof root) != 0 ||
        find_cgroup(cgroup, v2, cg, sizeof cg) != 0)
        return 0;
    /* The mount shows the hierarchy from `root` down; the process's path is relative to the top. */
    const char *rel = cg;
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(cg, root, rl) == 0)
        rel = cg + rl;
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s%s", point, rel) >= (int)sizeof dir)
        return 0;
    double best = 0;
    size_t plen = strlen(point);
    for (;;) {
        double q = dir_quota(v2, dir);
        if (q > 0 && (best == 0 || q < best))
            best = q;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < plen)
            break;
        *slash = '\0';
    }
    return best;
}

double weft__cgroup_cpu_quota_at(const char *mountinfo, const char *cgroup)
{
    double v2 = hierarchy_quota(mountinfo, cgroup, 1), v1 = hierarchy_quota(mountinfo, cgroup, 0);
    if (v2 > 0 && v1 > 0)
        return v2 < v1 ? v2 : v1;
    return v2 > 0 ? v2 : v1;
}

double weft__cgroup_cpu_quota(void)
{
    return weft__cgroup_cpu_quota_at("/proc/self/mountinfo", "/proc/self/cgroup");
}

int weft__cpu_count(void)
{
    int n = weft__affinity_count();
    double q = weft__cgroup_cpu_quota();
    if (q > 0) {
        int qn = (int)ceil(q);
        if (qn < 1)
            qn = 1;
        if (qn < n)
            n = qn;
    }
    return n;
}
