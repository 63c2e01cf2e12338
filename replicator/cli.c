/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the ferry CLI's verbs: option parsing common to all of
 * them, opening the vault and a VM with errors a user can act on, and the
 * formatting of ages and sizes (times: ferry_format_time in util.h).
 */
#include "cli.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"

void format_bytes(uint64_t b, char *buf, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)b;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void format_age(int64_t ns, char *buf, size_t size)
{
	int64_t s = ns / 1000000000;
	if (s < 0)
		s = 0;
	if (s < 120)
		snprintf(buf, size, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, size, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
	else
		snprintf(buf, size, "%lldh%02lldm", (long long)s / 3600, (long long)(s / 60) % 60);
}

const char *consistency_name(int c)
{
	return c == FERRY_CONSISTENCY_APP ? "app" : "crash";
}

int note_last(const struct ferry_point *p, void *userdata)
{
	struct last_points *lp = userdata;
	lp->last = *p;
	lp->have = 1;
	lp->count++;
	if (p->consistency == FERRY_CONSISTENCY_APP) {
		lp->last_app = *p;
		lp->have_app = 1;
	}
	return 0;
}

int res_text(const char *kind, const char *value, void *userdata)
{
	char k[256], v[4 * FERRY_URL_MAX];
	(void)userdata;
	/* The agent's path is the source's business; health has its own line. */
	if (strcmp(kind, "agent-config") != 0 && strcmp(kind, "health") != 0)
		printf("    %-24s %s\n", log_escape(kind, k, sizeof(k)),
		       log_escape(value, v, sizeof(v)));
	return 0;
}

int open_vault(const char *dir, int readonly, struct ferry_vault **ret)
{
	if (!dir) {
		log_error("--vault DIR is required");
		return -EINVAL;
	}
	int r = ferry_vault_open(dir, readonly, ret);
	if (r == -ENOENT)
		log_error("%s is not a vault (no catalog.db; create one with 'ferry init')", dir);
	else if (r == -EPROTONOSUPPORT)
		log_error("vault %s was made by a newer ferry", dir);
	else if (r < 0)
		log_error_errno(r, "cannot open vault %s", dir);
	return r;
}

int get_vm(struct ferry_vault *v, const char *name, struct ferry_vm *ret)
{
	int r = ferry_catalog_vm_get(ferry_vault_catalog(v), name, ret);
	if (r == -ENOENT)
		log_error("no VM '%s' in vault %s", name, ferry_vault_dir(v));
	else if (r < 0)
		log_error_errno(r, "cannot read VM '%s'", name);
	return r;
}

int parse_opts(int argc, char **argv, const struct option *longopts, struct opts *o,
	       const char *help_text, cli_opt_fn on_opt, void *userdata)
{
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		int r = 0;
		switch (c) {
		case 'V':
			o->vault = optarg;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			fputs(help_text, stdout);
			o->help = 1;
			return 0;
		case '?':
			return -EINVAL;
		default:
			r = on_opt ? on_opt(c, optarg, userdata) : -EINVAL;
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int common_opt(int c, const char *arg, void *userdata)
{
	(void)arg;
	struct opts *o = userdata;
	if (c != 'r')
		return -EINVAL;
	o->read_data = 1;
	return 0;
}

int parse_common(int argc, char **argv, struct opts *o, const char *help_text)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ "read-data", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	return parse_opts(argc, argv, longopts, o, help_text, common_opt, o);
}

/* An absolute form of path that need not exist yet. */
char *absolute(const char *path)
{
	if (path[0] == '/')
		return strdup(path);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	char *r;
	return asprintf(&r, "%s/%s", cwd, path) < 0 ? NULL : r;
}

int one_vm_args(int argc, char **argv, const char *help, struct opts *o, const char **ret_vm)
{
	if (parse_common(argc, argv, o, help) < 0)
		return 2;
	if (o->help)
		return 0;
	if (optind + 1 != argc) {
		log_error("expected exactly one VM name (see --help)");
		return 2;
	}
	*ret_vm = argv[optind];
	return -1;
}

static int undo_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	/* Best effort: what cannot be removed is named by the caller's
	 * message anyway. */
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

void undo_vault_dir(const char *dir, int existed)
{
	nftw(dir, undo_one, 16, FTW_DEPTH | FTW_PHYS);
	if (existed)
		mkdir(dir, FERRY_DIR_MODE);
}
