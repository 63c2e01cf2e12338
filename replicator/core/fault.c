/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault plan (fault.h). One mutex guards it; without a plan the hot
 * paths see one relaxed atomic load.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/fault.h"
#include "ferry/util.h"

#ifdef FERRY_FAULT_INJECTION

#define RULES_MAX 16
#define MATCH_MAX 64
#define SITE_ANY FERRY_FAULT_SITES
#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

enum kind {
	K_EIO,
	K_ENOSPC,
	K_SHORT,
	K_CRASH,
	K_CRASH_AFTER
};

struct rule {
	int site; /* enum ferry_fault_site, or SITE_ANY */
	char match[MATCH_MAX];
	enum kind kind;
	uint64_t nth;   /* fires at this matching call, 1-based */
	bool repeat;    /* and at every later one */
	uint64_t calls; /* matching calls so far */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool armed;
static struct rule rules[RULES_MAX];
static size_t nrules;
static _Thread_local bool crash_after[FERRY_FAULT_SITES];

static const char *const site_names[] = {
	[FERRY_FAULT_WRITE] = "write",
	[FERRY_FAULT_FSYNC] = "fsync",
	[FERRY_FAULT_COMMIT] = "commit",
	[FERRY_FAULT_PUT] = "put",
	[FERRY_FAULT_GET] = "get",
	[FERRY_FAULT_DELETE] = "delete",
	[FERRY_FAULT_LIST] = "list",
	[FERRY_FAULT_FREEZE] = "freeze",
	[SITE_ANY] = "any",
};
static const char *const kind_names[] = {
	[K_EIO] = "eio",     [K_ENOSPC] = "enospc",           [K_SHORT] = "short",
	[K_CRASH] = "crash", [K_CRASH_AFTER] = "crash-after",
};

static int lookup(const char *const *names, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return (int)i;
	return -1;
}

/* SITE[~MATCH]:KIND[@N[+]], len bytes of s. */
static int parse_rule(const char *s, size_t len, struct rule *r)
{
	*r = (struct rule){ .nth = 1 };
	const char *end = s + len;
	const char *colon = memchr(s, ':', len);
	if (!colon)
		return -EINVAL;
	const char *tilde = memchr(s, '~', (size_t)(colon - s));
	const char *site_end = tilde ? tilde : colon;
	r->site = lookup(site_names, ELEMENTSOF(site_names), s, (size_t)(site_end - s));
	if (r->site < 0)
		return -EINVAL;
	if (tilde) {
		size_t n = (size_t)(colon - tilde - 1);
		if (n == 0 || n >= MATCH_MAX)
			return -EINVAL;
		memcpy(r->match, tilde + 1, n);
	}
	const char *k = colon + 1;
	const char *at = memchr(k, '@', (size_t)(end - k));
	int kind = lookup(kind_names, ELEMENTSOF(kind_names), k, (size_t)((at ? at : end) - k));
	if (kind < 0)
		return -EINVAL;
	r->kind = (enum kind)kind;
	if (r->kind == K_SHORT && r->site != FERRY_FAULT_WRITE)
		return -EINVAL;
	if (at) {
		size_t n = (size_t)(end - at - 1);
		if (n > 0 && at[n] == '+') {
			r->repeat = true;
			n--;
		}
		if (ferry_parse_u64(at + 1, n, UINT64_MAX, &r->nth) < 0 || r->nth == 0)
			return -EINVAL;
	}
	return 0;
}

int ferry_fault_plan(const char *spec)
{
	struct rule parsed[RULES_MAX];
	size_t n = 0;
	for (const char *p = spec; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (n == RULES_MAX || parse_rule(p, len, &parsed[n]) < 0)
			return -EINVAL;
		n++;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p)
			return -EINVAL; /* a trailing comma: a rule is missing */
	}
	pthread_mutex_lock(&lock);
	memcpy(rules, parsed, n * sizeof(parsed[0]));
	nrules = n;
	atomic_store(&armed, n > 0);
	pthread_mutex_unlock(&lock);
	return 0;
}

static bool applies(const struct rule *r, enum ferry_fault_site site, const char *name)
{
	if (r->site != SITE_ANY && r->site != (int)site)
		return false;
	if (r->match[0] && (!name || !strstr(name, r->match)))
		return false;
	if (r->kind == K_SHORT && site != FERRY_FAULT_WRITE)
		return false;
	return true;
}

int ferry_fault_before(enum ferry_fault_site site, const char *name)
{
	if (!atomic_load_explicit(&armed, memory_order_relaxed))
		return 0;
	int ret = 0;
	bool crash = false;
	crash_after[site] = false;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nrules && !ret && !crash; i++) {
		struct rule *r = &rules[i];
		if (!applies(r, site, name))
			continue;
		r->calls++;
		if (r->calls < r->nth || (r->calls > r->nth && !r->repeat))
			continue;
		switch (r->kind) {
		case K_EIO:
			ret = -EIO;
			break;
		case K_ENOSPC:
			ret = -ENOSPC;
			break;
		case K_SHORT:
			ret = FERRY_FAULT_SHORT;
			break;
		case K_CRASH:
			crash = true;
			break;
		case K_CRASH_AFTER:
			crash_after[site] = true;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	if (crash)
		raise(SIGKILL);
	return ret;
}

void ferry_fault_after(enum ferry_fault_site site)
{
	if (crash_after[site])
		raise(SIGKILL);
}

#endif
