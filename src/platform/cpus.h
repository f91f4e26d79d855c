#ifndef WEFT_PLATFORM_CPUS_H
#define WEFT_PLATFORM_CPUS_H

/* CPUs in this process's affinity mask. */
int weft__affinity_count(void);
/* CPU quota of this process's cgroups in CPUs (1.5 = one and a half), 0 when none is set. */
double weft__cgroup_cpu_quota(void);
/* The same from other files than /proc/self/{mountinfo,cgroup} (for tests). */
double weft__cgroup_cpu_quota_at(const char *mountinfo, const char *cgroup);

#endif
