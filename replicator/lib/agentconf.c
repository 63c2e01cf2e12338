/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent configuration file, read and written. inih splits the text;
 * read_line() feeds it line by line to count lines, catch what inih lets
 * pass silently (a section without keys, a line too long, a [disk] header)
 * and keep only the first error; handle_key() checks every value as it
 * comes. The writer refuses any value inih would hand back otherwise than
 * it was written, so that the agent reads what the CLI meant.
 */
#include "agentconf.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ferry/log.h"
#include "ferry/util.h"

/* inih reads a line into a buffer of INI_MAX_LINE bytes and read_line()
 * refuses one that would fill it: with its newline and inih's NUL, a line
 * holds at most this many bytes. */
#define LINE_MAX_BYTES (INI_MAX_LINE - 3)

static const char *const cred_keys[AGENTCONF_NCREDS] = {
	[AGENTCONF_AZURE_CONNECTION_STRING] = "azure_connection_string",
	[AGENTCONF_AZURE_ACCOUNT] = "azure_account",
	[AGENTCONF_AZURE_KEY] = "azure_key",
	[AGENTCONF_AZURE_SAS_TOKEN] = "azure_sas_token",
	[AGENTCONF_AWS_ACCESS_KEY_ID] = "aws_access_key_id",
	[AGENTCONF_AWS_SECRET_ACCESS_KEY] = "aws_secret_access_key",
	[AGENTCONF_AWS_SESSION_TOKEN] = "aws_session_token",
	[AGENTCONF_AWS_REGION] = "aws_region",
	[AGENTCONF_AWS_ENDPOINT_URL] = "aws_endpoint_url",
};

void agentconf_free(struct agentconf *c)
{
	if (!c)
		return;
	free(c->vm);
	free(c->cache);
	free(c->state);
	free(c->qmp);
	free(c->nbd_socket);
	free(c->domain);
	free(c->connect);
	free(c->run_dir);
	free(c->group);
	free(c->qga);
	for (size_t i = 0; i < c->ndisks; i++) {
		free(c->disks[i].name);
		free(c->disks[i].path);
	}
	free(c->disks);
	for (size_t i = 0; i < ARRAY_SIZE(c->creds); i++)
		if (c->creds[i]) {
			explicit_bzero(c->creds[i], strlen(c->creds[i]));
			free(c->creds[i]);
		}
	*c = (struct agentconf){ 0 };
}

int agentconf_parse_interval(const char *s, uint64_t *ret)
{
	if (!s)
		return -EINVAL;
	return ferry_parse_u64(s, strlen(s), AGENTCONF_MAX_INTERVAL, ret);
}

/* ---- reading ---- */

struct parser {
	struct agentconf *c;
	const char *file;
	FILE *f;
	char *buf; /* getline's */
	size_t cap;
	unsigned line;
	int has_interval;
	int has_tracker;
	int has_group_interval, has_group_pause_limit;
	int has_app_interval, has_freeze_timeout;
	/* Keys the disks were given with: a bit per disk, for path, node and
	 * target. */
	uint8_t path_keys[AGENTCONF_MAX_DISKS], node_keys[AGENTCONF_MAX_DISKS];
	uint8_t target_keys[AGENTCONF_MAX_DISKS];
	char error[512]; /* the first error, with its line */
	unsigned error_line;
};

/* Records the first error, prefixed with file and line; returns 0, inih's
 * "stop" for a handler. */
__attribute__((format(printf, 2, 3))) static int fail(struct parser *p, const char *fmt, ...)
{
	int n = snprintf(p->error, sizeof(p->error), "%s:%u: ", p->file, p->line);
	if (n >= 0 && (size_t)n < sizeof(p->error)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->error + n, sizeof(p->error) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return 0;
}

static int fail_oom(struct parser *p)
{
	snprintf(p->error, sizeof(p->error), "out of memory");
	return 0;
}

/* Hands inih a comment instead of a line: keeps it going without letting it
 * see the line, so that the first error recorded is the one reported. */
static char *skip_line(char *str, int num)
{
	snprintf(str, (size_t)num, "#\n");
	return str;
}

/* Feeds inih line by line: counts lines for the error messages and starts
 * a new disk at each [disk] header, which inih itself does not report. */
static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	struct agentconf *c = p->c;
	ssize_t n = getline(&p->buf, &p->cap, p->f);
	if (n < 0)
		return NULL;
	p->line++;
	if (p->error[0])
		return skip_line(str, num);
	if (n >= num - 1) {
		fail(p, "line too long");
		p->error_line = p->line;
		return skip_line(str, num);
	}
	const char *s = p->buf + strspn(p->buf, " \t");
	if (*s == '[' && strncmp(s, "[agent]", 7) != 0 && strncmp(s, "[disk]", 6) != 0 &&
	    strncmp(s, "[credentials]", 13) != 0) {
		/* inih never reports a section without keys: catch it here. */
		fail(p, "unknown section %.*s", (int)strcspn(s, "\r\n"), s);
		p->error_line = p->line;
		return skip_line(str, num);
	}
	if (strncmp(s, "[disk]", 6) == 0) {
		if (c->ndisks >= AGENTCONF_MAX_DISKS) {
			fail(p, "more than %d disks", AGENTCONF_MAX_DISKS);
			p->error_line = p->line;
			return skip_line(str, num);
		}
		struct agent_disk *d = realloc(c->disks, (c->ndisks + 1) * sizeof(*d));
		if (!d) {
			fail_oom(p);
			return skip_line(str, num);
		}
		c->disks = d;
		c->disks[c->ndisks++] = (struct agent_disk){ 0 };
	}
	memcpy(str, p->buf, (size_t)n + 1);
	return str;
}

static int set_string(struct parser *p, char **field, const char *key, const char *value)
{
	if (*field)
		return fail(p, "'%s' given twice", key);
	if (!*value)
		return fail(p, "'%s' is empty", key);
	*field = strdup(value);
	if (!*field)
		return fail_oom(p);
	return 1;
}

static int handle_agent_key(struct parser *p, const char *name, const char *value)
{
	struct agentconf *c = p->c;
	if (strcmp(name, "version") == 0) {
		uint64_t v;
		if (ferry_parse_u64(value, strlen(value), UINT32_MAX, &v) < 0 ||
		    v != AGENTCONF_VERSION)
			return fail(p,
				    "configuration version '%s' is not supported (this agent "
				    "reads version %d)",
				    value, AGENTCONF_VERSION);
		return 1;
	}
	if (strcmp(name, "vm") == 0) {
		if (!ferry_name_valid(value))
			return fail(p,
				    "invalid VM name '%s' (1-64 of A-Z a-z 0-9 . _ -, not "
				    "starting with . or -)",
				    value);
		return set_string(p, &c->vm, name, value);
	}
	if (strcmp(name, "cache") == 0)
		return set_string(p, &c->cache, name, value);
	if (strcmp(name, "state") == 0)
		return set_string(p, &c->state, name, value);
	if (strcmp(name, "interval") == 0) {
		if (p->has_interval)
			return fail(p, "'interval' given twice");
		if (agentconf_parse_interval(value, &c->interval) < 0)
			return fail(p, "invalid interval '%s' (seconds, 0 to %u)", value,
				    AGENTCONF_MAX_INTERVAL);
		p->has_interval = 1;
		return 1;
	}
	if (strcmp(name, "tracker") == 0) {
		if (p->has_tracker)
			return fail(p, "'tracker' given twice");
		if (strcmp(value, "scan") == 0)
			c->tracker = AGENTCONF_TRACKER_SCAN;
		else if (strcmp(value, "qemu") == 0)
			c->tracker = AGENTCONF_TRACKER_QEMU;
		else if (strcmp(value, "libvirt") == 0)
			c->tracker = AGENTCONF_TRACKER_LIBVIRT;
		else
			return fail(p, "unknown tracker '%s' (scan, qemu or libvirt)", value);
		p->has_tracker = 1;
		return 1;
	}
	if (strcmp(name, "qmp") == 0)
		return set_string(p, &c->qmp, name, value);
	if (strcmp(name, "nbd-socket") == 0)
		return set_string(p, &c->nbd_socket, name, value);
	if (strcmp(name, "domain") == 0)
		return set_string(p, &c->domain, name, value);
	if (strcmp(name, "connect") == 0)
		return set_string(p, &c->connect, name, value);
	if (strcmp(name, "run-dir") == 0)
		return set_string(p, &c->run_dir, name, value);
	if (strcmp(name, "group") == 0) {
		if (!ferry_name_valid(value))
			return fail(p,
				    "invalid group name '%s' (1-64 of A-Z a-z 0-9 . _ -, not "
				    "starting with . or -)",
				    value);
		return set_string(p, &c->group, name, value);
	}
	if (strcmp(name, "group-interval") == 0) {
		if (p->has_group_interval)
			return fail(p, "'group-interval' given twice");
		if (agentconf_parse_interval(value, &c->group_interval) < 0 ||
		    c->group_interval == 0)
			return fail(p, "invalid group-interval '%s' (seconds, 1 to %u)", value,
				    AGENTCONF_MAX_INTERVAL);
		p->has_group_interval = 1;
		return 1;
	}
	if (strcmp(name, "group-pause-limit") == 0) {
		if (p->has_group_pause_limit)
			return fail(p, "'group-pause-limit' given twice");
		if (ferry_parse_u64(value, strlen(value), AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS,
				    &c->group_pause_limit_ms) < 0 ||
		    c->group_pause_limit_ms == 0)
			return fail(p, "invalid group-pause-limit '%s' (ms, 1 to %u)", value,
				    AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS);
		p->has_group_pause_limit = 1;
		return 1;
	}
	if (strcmp(name, "qga") == 0)
		return set_string(p, &c->qga, name, value);
	if (strcmp(name, "app-interval") == 0) {
		if (p->has_app_interval)
			return fail(p, "'app-interval' given twice");
		if (agentconf_parse_interval(value, &c->app_interval) < 0)
			return fail(p, "invalid app-interval '%s' (seconds, 0 to %u)", value,
				    AGENTCONF_MAX_INTERVAL);
		p->has_app_interval = 1;
		return 1;
	}
	if (strcmp(name, "freeze-timeout") == 0) {
		if (p->has_freeze_timeout)
			return fail(p, "'freeze-timeout' given twice");
		if (ferry_parse_u64(value, strlen(value), AGENTCONF_MAX_FREEZE_TIMEOUT,
				    &c->freeze_timeout) < 0 ||
		    c->freeze_timeout == 0)
			return fail(p, "invalid freeze-timeout '%s' (seconds, 1 to %u)", value,
				    AGENTCONF_MAX_FREEZE_TIMEOUT);
		p->has_freeze_timeout = 1;
		return 1;
	}
	if (strcmp(name, "chunk-size") == 0) {
		if (c->has_chunk_size)
			return fail(p, "'chunk-size' given twice");
		/* 0: whole segments compressed (format 1.0); otherwise the
		 * vault's chunk size, a power of two. */
		uint64_t v;
		if (ferry_parse_u64(value, strlen(value), AGENTCONF_MAX_CHUNK_SIZE, &v) < 0 ||
		    (v && (v < 4096 || (v & (v - 1)))))
			return fail(p,
				    "invalid chunk-size '%s' (0, or a power of two from 4096 "
				    "to %u)",
				    value, AGENTCONF_MAX_CHUNK_SIZE);
		c->chunk_size = (uint32_t)v;
		c->has_chunk_size = 1;
		return 1;
	}
	return fail(p, "unknown key '%s' in [agent]", name);
}

static int handle_disk_key(struct parser *p, const char *name, const char *value)
{
	struct agentconf *c = p->c;
	struct agent_disk *d = &c->disks[c->ndisks - 1];
	if (strcmp(name, "name") == 0) {
		if (!ferry_name_valid(value))
			return fail(p,
				    "invalid disk name '%s' (1-64 of A-Z a-z 0-9 . _ -, not "
				    "starting with . or -)",
				    value);
		for (size_t i = 0; i + 1 < c->ndisks; i++)
			if (c->disks[i].name && strcmp(c->disks[i].name, value) == 0)
				return fail(p, "disk name '%s' used twice", value);
		return set_string(p, &d->name, name, value);
	}
	if (strcmp(name, "path") == 0 || strcmp(name, "node") == 0 || strcmp(name, "target") == 0) {
		if (d->path)
			return fail(p, "a disk takes one 'path' (scan), 'node' (qemu) or "
				       "'target' (libvirt)");
		(name[0] == 'p' ? p->path_keys :
		 name[0] == 'n' ? p->node_keys :
				  p->target_keys)[c->ndisks - 1] = 1;
		return set_string(p, &d->path, name, value);
	}
	return fail(p, "unknown key '%s' in [disk]", name);
}

static int handle_key(struct parser *p, const char *section, const char *name, const char *value)
{
	if (strcmp(section, "agent") == 0)
		return handle_agent_key(p, name, value);
	if (strcmp(section, "disk") == 0 && p->c->ndisks > 0)
		return handle_disk_key(p, name, value);
	if (strcmp(section, "credentials") == 0) {
		/* Messages name the key, never the value: it is a secret. */
		for (size_t i = 0; i < ARRAY_SIZE(cred_keys); i++)
			if (strcmp(name, cred_keys[i]) == 0) {
				p->c->has_creds = 1;
				return set_string(p, &p->c->creds[i], name, value);
			}
		return fail(p, "unknown key '%s' in [credentials]", name);
	}
	if (!*section)
		return fail(p, "'%s' outside of any section", name);
	return fail(p, "unknown section [%s]", section);
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;
	if (p->error[0])
		return 0;
	int r = handle_key(p, section, name, value);
	if (!r)
		p->error_line = p->line;
	return r;
}

/* Configuration errors are about the text, not the system: no errno. */
#define config_error(...) (log_error(__VA_ARGS__), -EINVAL)

/* Parses f, named file in messages, into *c (zeroed by the caller, freed by
 * it whatever the result). */
static int parse(FILE *f, const char *file, struct agentconf *c)
{
	c->interval = AGENTCONF_DEFAULT_INTERVAL;
	c->group_interval = AGENTCONF_DEFAULT_GROUP_INTERVAL;
	c->group_pause_limit_ms = AGENTCONF_DEFAULT_GROUP_PAUSE_LIMIT_MS;
	c->freeze_timeout = AGENTCONF_DEFAULT_FREEZE_TIMEOUT;
	struct parser p = { .c = c, .file = file, .f = f };
	int r = ini_parse_stream(read_line, &p, handler, &p);
	free(p.buf);
	if (r < 0)
		return log_error_errno(-ENOMEM, "cannot parse %s", file);
	/* inih goes on after a syntax error; report whichever came first. */
	if (r > 0 && (!p.error[0] || (unsigned)r < p.error_line))
		return config_error("%s:%d: syntax error", file, r);
	if (p.error[0])
		return config_error("%s", p.error);

	if (!c->vm)
		return config_error("%s: 'vm' missing in [agent]", file);
	if (!c->cache)
		return config_error("%s: 'cache' missing in [agent]", file);
	if (!c->state)
		return config_error("%s: 'state' missing in [agent]", file);
	if (c->ndisks == 0)
		return config_error("%s: no [disk] section: VM %s has no disks", file, c->vm);
	int qemu = c->tracker == AGENTCONF_TRACKER_QEMU;
	if (qemu && !c->qmp)
		return config_error(
			"%s: the qemu tracker needs 'qmp' (qemu's QMP socket) in [agent]", file);
	if (!qemu && (c->qmp || c->nbd_socket))
		return config_error("%s: 'qmp' and 'nbd-socket' are for 'tracker = qemu'", file);
	int libvirt = c->tracker == AGENTCONF_TRACKER_LIBVIRT;
	if (libvirt && !c->domain)
		return config_error(
			"%s: the libvirt tracker needs 'domain' (the libvirt domain) in [agent]",
			file);
	if (!libvirt && (c->domain || c->connect || c->run_dir))
		return config_error("%s: 'domain', 'connect' and 'run-dir' are for 'tracker = "
				    "libvirt'",
				    file);
	/* A group pauses its VMs with QMP stop: qemu-system and its tracker. */
	if (!qemu && c->group)
		return config_error("%s: 'group' needs 'tracker = qemu' (the agent pauses the VM "
				    "through QMP for a group's cut)",
				    file);
	if (!c->group && (p.has_group_interval || p.has_group_pause_limit))
		return config_error("%s: 'group-interval' and 'group-pause-limit' go with 'group'",
				    file);
	/* A freeze brackets the qemu tracker's instant cut; a scan takes too
	 * long to hold a guest frozen. */
	if (!qemu && c->qga)
		return config_error("%s: 'qga' (app-consistent cuts) needs 'tracker = qemu'", file);
	if (!c->qga && ((c->app_interval && !libvirt) || p.has_freeze_timeout))
		return config_error("%s: 'app-interval' and 'freeze-timeout' need 'qga' (the "
				    "guest agent's socket)",
				    file);
	for (size_t i = 0; i < c->ndisks; i++) {
		if (!c->disks[i].name)
			return config_error("%s: [disk] number %zu has no 'name'", file, i + 1);
		const char *key = qemu ? "node" : libvirt ? "target" : "path";
		int wrong = qemu    ? p.path_keys[i] || p.target_keys[i] :
			    libvirt ? p.path_keys[i] || p.node_keys[i] :
				      p.node_keys[i] || p.target_keys[i];
		if (!c->disks[i].path || wrong)
			return config_error("%s: disk %s needs '%s' (the %s tracker)", file,
					    c->disks[i].name, key,
					    qemu    ? "qemu" :
					    libvirt ? "libvirt" :
						      "scan");
	}
	return 0;
}

int agentconf_load(const char *path, struct agentconf *ret)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return log_error_errno(-errno, "cannot open configuration %s", path);
	_cleanup_(agentconf_free) struct agentconf c = { 0 };
	int r = parse(f, path, &c);
	if (r < 0)
		return r;
	struct stat st;
	if (c.has_creds && fstat(fileno(f), &st) >= 0 && (st.st_mode & 0077))
		log_warning("%s holds credentials but others may read it: chmod 600 %s", path,
			    path);
	*ret = c;
	c = (struct agentconf){ 0 };
	return 0;
}

/* ---- writing ---- */

struct writer {
	FILE *f;
	const char *path, *vm;
};

/* A comment is for people only: one that would not fit on a line the
 * reader takes is left out rather than make the file unreadable. */
__attribute__((format(printf, 2, 3))) static int put_comment(struct writer *w, const char *fmt, ...)
{
	_cleanup_free_ char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	if ((size_t)n <= LINE_MAX_BYTES && !strchr(s, '\n'))
		fprintf(w->f, "%s\n", s);
	return 0;
}

/* Why inih would not hand back value as it is from "key = value", or NULL
 * (and then what it would do instead): it strips blanks at either end and
 * takes ';' after a blank (the one after '=' too) for a comment. '#', '='
 * and any other byte, UTF-8 among them, come back as they are. */
static const char *value_trouble(const char *value, const char **ret_effect)
{
	size_t n = value ? strlen(value) : 0;
	*ret_effect = "read something else";
	if (n == 0)
		return "is empty";
	if (strchr(value, '\n')) {
		*ret_effect = "read it as more than one line";
		return "holds a line break";
	}
	if (isspace((unsigned char)value[0]) || isspace((unsigned char)value[n - 1])) {
		*ret_effect = "drop those blanks";
		return "starts or ends with a blank";
	}
	*ret_effect = "take the rest of the line for a comment";
	if (value[0] == ';')
		return "starts with ';'";
	for (size_t i = 0; i + 1 < n; i++)
		if (isspace((unsigned char)value[i]) && value[i + 1] == ';')
			return "has a ';' after a blank";
	return NULL;
}

/* One "key = value" line; what names the value in messages ("cache",
 * "path of disk os"). */
static int put_value(struct writer *w, const char *what, const char *key, const char *value)
{
	const char *effect, *trouble = value_trouble(value, &effect);
	if (trouble) {
		log_error("agent configuration %s: the %s of VM %s %s, and ferry-agent would %s "
			  "(it would replicate or write another file than meant): rename or move "
			  "it, or use another path",
			  w->path, what, w->vm, trouble, effect);
		return -EINVAL;
	}
	size_t n = strlen(key) + 3 + strlen(value);
	if (n > LINE_MAX_BYTES) {
		log_error("agent configuration %s: the line for the %s of VM %s would be %zu "
			  "bytes, more than the %d ferry-agent reads",
			  w->path, what, w->vm, n, LINE_MAX_BYTES);
		return -ENAMETOOLONG;
	}
	fprintf(w->f, "%s = %s\n", key, value);
	return 0;
}

/* The rules of struct agentconf that do not depend on how a value is
 * written. */
static int check(const struct agentconf *c, const char *path)
{
	if (!ferry_name_valid(c->vm)) {
		log_error("agent configuration %s: invalid VM name '%s'", path, c->vm ?: "");
		return -EINVAL;
	}
	if (c->interval > AGENTCONF_MAX_INTERVAL) {
		log_error("agent configuration %s: VM %s: interval %llu s is over the %u s "
			  "ferry-agent takes",
			  path, c->vm, (unsigned long long)c->interval, AGENTCONF_MAX_INTERVAL);
		return -EINVAL;
	}
	if (c->has_chunk_size && c->chunk_size &&
	    (c->chunk_size < 4096 || c->chunk_size > AGENTCONF_MAX_CHUNK_SIZE ||
	     (c->chunk_size & (c->chunk_size - 1)))) {
		log_error("agent configuration %s: VM %s: chunk size %u is not 0 or a power of "
			  "two from 4096 to %u",
			  path, c->vm, c->chunk_size, AGENTCONF_MAX_CHUNK_SIZE);
		return -EINVAL;
	}
	if (c->tracker == AGENTCONF_TRACKER_QEMU ? !c->qmp : (c->qmp || c->nbd_socket)) {
		log_error("agent configuration %s: VM %s: 'qmp' goes with the qemu tracker, and "
			  "only with it",
			  path, c->vm);
		return -EINVAL;
	}
	if (c->group && (c->tracker != AGENTCONF_TRACKER_QEMU || !ferry_name_valid(c->group) ||
			 c->group_interval == 0 || c->group_interval > AGENTCONF_MAX_INTERVAL ||
			 c->group_pause_limit_ms == 0 ||
			 c->group_pause_limit_ms > AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS)) {
		log_error("agent configuration %s: VM %s: a group needs the qemu tracker, a valid "
			  "name, an interval of 1 to %u s and a pause limit of 1 to %u ms",
			  path, c->vm, AGENTCONF_MAX_INTERVAL, AGENTCONF_MAX_GROUP_PAUSE_LIMIT_MS);
		return -EINVAL;
	}
	if (c->qga ? c->tracker != AGENTCONF_TRACKER_QEMU ||
			     c->app_interval > AGENTCONF_MAX_INTERVAL || c->freeze_timeout == 0 ||
			     c->freeze_timeout > AGENTCONF_MAX_FREEZE_TIMEOUT :
		     c->app_interval != 0 && c->tracker != AGENTCONF_TRACKER_LIBVIRT) {
		log_error("agent configuration %s: VM %s: app-consistent cuts need the qemu "
			  "tracker and a guest agent socket, an app interval of 0 to %u s and a "
			  "freeze timeout of 1 to %u s",
			  path, c->vm, AGENTCONF_MAX_INTERVAL, AGENTCONF_MAX_FREEZE_TIMEOUT);
		return -EINVAL;
	}
	if (c->tracker == AGENTCONF_TRACKER_LIBVIRT ? !c->domain :
						      (c->domain || c->connect || c->run_dir)) {
		log_error("agent configuration %s: VM %s: 'domain' goes with the libvirt tracker, "
			  "and only with it",
			  path, c->vm);
		return -EINVAL;
	}
	if (c->ndisks == 0 || c->ndisks > AGENTCONF_MAX_DISKS) {
		log_error("agent configuration %s: VM %s has %zu disks (1 to %d)", path, c->vm,
			  c->ndisks, AGENTCONF_MAX_DISKS);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->ndisks; i++) {
		if (!ferry_name_valid(c->disks[i].name)) {
			log_error("agent configuration %s: VM %s: invalid disk name '%s'", path,
				  c->vm, c->disks[i].name ?: "");
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->disks[i].name, c->disks[j].name) == 0) {
				log_error("agent configuration %s: VM %s: disk name '%s' used "
					  "twice",
					  path, c->vm, c->disks[i].name);
				return -EINVAL;
			}
	}
	return 0;
}

static int format_body(struct writer *w, const struct agentconf *c, const char *why)
{
	int r = put_comment(w, "# ferry agent configuration for VM %s, %s.", c->vm, why);
	if (r >= 0)
		r = put_comment(w, "# Run: ferry-agent --config %s", w->path);
	if (r < 0)
		return r;
	fprintf(w->f, "[agent]\nversion = %d\nvm = %s\n", AGENTCONF_VERSION, c->vm);
	r = put_value(w, "cache", "cache", c->cache);
	if (r >= 0)
		r = put_value(w, "state directory", "state", c->state);
	if (r < 0)
		return r;
	fprintf(w->f, "interval = %llu\n", (unsigned long long)c->interval);
	if (c->has_chunk_size)
		fprintf(w->f, "chunk-size = %u\n", c->chunk_size);
	int qemu = c->tracker == AGENTCONF_TRACKER_QEMU;
	if (qemu) {
		fprintf(w->f, "tracker = qemu\n");
		r = put_value(w, "QMP socket", "qmp", c->qmp);
		if (r >= 0 && c->nbd_socket)
			r = put_value(w, "NBD socket", "nbd-socket", c->nbd_socket);
	}
	int libvirt = c->tracker == AGENTCONF_TRACKER_LIBVIRT;
	if (libvirt) {
		fprintf(w->f, "tracker = libvirt\n");
		r = put_value(w, "libvirt domain", "domain", c->domain);
		if (r >= 0 && c->connect)
			r = put_value(w, "libvirt URI", "connect", c->connect);
		if (r >= 0 && c->run_dir)
			r = put_value(w, "run directory", "run-dir", c->run_dir);
		if (r >= 0 && c->app_interval)
			fprintf(w->f, "app-interval = %llu\n", (unsigned long long)c->app_interval);
	}
	if (r >= 0 && c->group)
		fprintf(w->f, "group = %s\ngroup-interval = %llu\ngroup-pause-limit = %llu\n",
			c->group, (unsigned long long)c->group_interval,
			(unsigned long long)c->group_pause_limit_ms);
	if (r >= 0 && c->qga) {
		r = put_value(w, "guest agent socket", "qga", c->qga);
		if (r >= 0)
			fprintf(w->f, "app-interval = %llu\nfreeze-timeout = %llu\n",
				(unsigned long long)c->app_interval,
				(unsigned long long)c->freeze_timeout);
	}
	for (size_t i = 0; r >= 0 && i < c->ndisks; i++) {
		char what[96]; /* "path of disk " and a valid name */
		const char *key = qemu ? "node" : libvirt ? "target" : "path";
		snprintf(what, sizeof(what), "%s of disk %s", key, c->disks[i].name);
		fprintf(w->f, "\n[disk]\nname = %s\n", c->disks[i].name);
		r = put_value(w, what, key, c->disks[i].path);
	}
	return r;
}

int agentconf_format(const struct agentconf *c, const char *path, const char *why, char **ret_text,
		     size_t *ret_len)
{
	int r = check(c, path);
	if (r < 0)
		return r;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	struct writer w = { .f = open_memstream(&text, &len), .path = path, .vm = c->vm };
	if (!w.f)
		return -ENOMEM;
	r = format_body(&w, c, why);
	if (fclose(w.f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0)
		return r;
	*ret_text = TAKE_PTR(text);
	*ret_len = len;
	return 0;
}

int agentconf_write(const struct agentconf *c, const char *path, const char *why)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = agentconf_format(c, path, why, &text, &len);
	if (r < 0)
		return r;
	return ferry_write_file_atomic(path, text, len);
}
