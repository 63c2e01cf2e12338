/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM definitions (see vmdef.h for the file formats): vm.conf, and for
 * failover clones domain.xml and qemu.args, with the reading of the
 * catalog's target resources (CPUs, memory, NICs) that turns a VM and its
 * failover into a definition. Everything is validated before a byte is
 * written, and every string goes through exactly one escaper for the
 * context it lands in: XML text and attributes, qemu option values (','
 * doubled) and shell words (single quotes). The output is built in a memory
 * stream; nothing touches disk.
 */
#include "ferry/vmdef.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/crypto.h"
#include "ferry/util.h"

#define DEFAULT_MACHINE "pc"
#define DEFAULT_ACCEL "kvm:tcg"
#define DEFAULT_CACHE "none"
#define DEFAULT_EMULATOR "qemu-system-x86_64"

static const char *or_default(const char *s, const char *def)
{
	return s && *s ? s : def;
}

static bool is_set(const char *s)
{
	return s && *s;
}

/* Well-formed UTF-8 without control characters: what XML 1.0 can carry and
 * what keeps qemu.args on one line. Overlongs and surrogates are refused. */
static bool text_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	if (!s)
		return false;
	while (*p) {
		unsigned c = *p, n, cp;
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (unsigned i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return false;
		p += n + 1;
	}
	return true;
}

static bool opt_text_ok(const char *s)
{
	return !s || text_ok(s);
}

/* Identifier-like values (machine type, accelerator): no quoting needed anywhere. */
static bool word_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static bool mac_ok(const char *s)
{
	if (!s || strlen(s) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		bool colon = i % 3 == 2;
		if (colon ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]))
			return false;
	}
	/* libvirt refuses multicast MACs; a NIC needs a unicast one. */
	unsigned first = (unsigned)strtoul(s, NULL, 16);
	return (first & 1) == 0;
}

static bool cache_ok(const char *s)
{
	static const char *const modes[] = { "none", "writeback", "writethrough", "directsync",
					     "unsafe" };
	for (size_t i = 0; i < ARRAY_SIZE(modes); i++)
		if (strcmp(s, modes[i]) == 0)
			return true;
	return false;
}

/* A colon-separated list of accelerator names, none of them empty. */
static bool accel_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == ':' || s[n - 1] == ':' || strstr(s, "::"))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_:") == n;
}

static int validate(const struct ferry_vmdef *d)
{
	if (!d || !text_ok(d->name) || !*d->name || d->cpus < 1 || d->cpus > 4096 ||
	    d->memory_mib < 1 || d->memory_mib > (UINT64_C(1) << 32))
		return -EINVAL;
	if (!word_ok(or_default(d->machine, DEFAULT_MACHINE), 64) ||
	    !accel_ok(or_default(d->accel, DEFAULT_ACCEL)) ||
	    !cache_ok(or_default(d->cache, DEFAULT_CACHE)) ||
	    !text_ok(or_default(d->emulator, DEFAULT_EMULATOR)))
		return -EINVAL;
	if (d->n_disks < 1 || d->n_disks > FERRY_VMDEF_MAX_DISKS || !d->disks ||
	    d->n_nics > FERRY_VMDEF_MAX_NICS || (d->n_nics && !d->nics))
		return -EINVAL;
	if (d->kind != FERRY_VMDEF_TEST_FAILOVER && d->kind != FERRY_VMDEF_FAILOVER)
		return -EINVAL;
	if (d->net != FERRY_VMDEF_NET_USER && d->net != FERRY_VMDEF_NET_BRIDGE)
		return -EINVAL;
	for (size_t i = 0; i < d->n_disks; i++)
		if (!text_ok(d->disks[i].name) || !*d->disks[i].name ||
		    !text_ok(d->disks[i].path) || d->disks[i].path[0] != '/')
			return -EINVAL;
	for (size_t i = 0; i < d->n_nics; i++)
		if (!mac_ok(d->nics[i].mac) || !text_ok(d->nics[i].network) ||
		    !*d->nics[i].network || !opt_text_ok(d->nics[i].address) ||
		    (d->nics[i].model && !word_ok(d->nics[i].model, 32)))
			return -EINVAL;
	if (!opt_text_ok(d->source_vm) || !opt_text_ok(d->recovery_point) ||
	    !opt_text_ok(d->resource_group) || !opt_text_ok(d->availability_set) ||
	    !opt_text_ok(d->subnet))
		return -EINVAL;
	return 0;
}

/* Hands the stream's buffer over; fails if any write to it failed. */
static int finish(FILE **f, char **buf, char **ret)
{
	bool bad = ferror(*f);
	if (fclose(*f) != 0)
		bad = true;
	*f = NULL;
	if (bad || !*buf)
		return -ENOMEM;
	*ret = TAKE_PTR(*buf);
	return 0;
}

/* ---- domain.xml ---------------------------------------------------------------- */

void ferry_vmdef_xml_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '\'':
			fputs("&apos;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

/* <tag>text</tag> on its own line, left out when text is unset. */
static void xml_elem(FILE *f, const char *indent, const char *tag, const char *text)
{
	if (!is_set(text))
		return;
	fprintf(f, "%s<%s>", indent, tag);
	ferry_vmdef_xml_escape(f, text);
	fprintf(f, "</%s>\n", tag);
}

static void xml_attr(FILE *f, const char *name, const char *value)
{
	fprintf(f, " %s='", name);
	ferry_vmdef_xml_escape(f, value);
	fputc('\'', f);
}

/* vda ... vdz, vdaa ...: the names libvirt and Linux give virtio disks. */
static void disk_target(size_t i, char ret[8])
{
	char tmp[8];
	size_t n = 0;
	i++;
	while (i > 0 && n < 5) {
		i--;
		tmp[n++] = (char)('a' + i % 26);
		i /= 26;
	}
	ret[0] = 'v';
	ret[1] = 'd';
	for (size_t k = 0; k < n; k++)
		ret[2 + k] = tmp[n - 1 - k];
	ret[2 + n] = 0;
}

static const char *kind_name(enum ferry_vmdef_kind k)
{
	return k == FERRY_VMDEF_TEST_FAILOVER ? "test-failover" : "failover";
}

int ferry_vmdef_domain_xml(const struct ferry_vmdef *d, char **ret)
{
	int r = validate(d);
	if (r < 0)
		return r;

	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	_cleanup_fclose_ FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;

	/* libvirt's type names the hypervisor: 'kvm' needs KVM, 'qemu' is TCG. */
	const char *accel = or_default(d->accel, DEFAULT_ACCEL);
	bool tcg_first = strncmp(accel, "tcg", 3) == 0 && (accel[3] == 0 || accel[3] == ':');
	char uuid[37];
	ferry_vmdef_uuid_format(d->uuid, uuid);

	fprintf(f, "<domain type='%s'>\n", tcg_first ? "qemu" : "kvm");
	xml_elem(f, "  ", "name", d->name);
	fprintf(f, "  <uuid>%s</uuid>\n", uuid);
	fprintf(f, "  <metadata>\n");
	fprintf(f, "    <ferry:failover xmlns:ferry='%s'>\n", FERRY_VMDEF_XMLNS);
	xml_elem(f, "      ", "ferry:kind", kind_name(d->kind));
	xml_elem(f, "      ", "ferry:source-vm", d->source_vm);
	xml_elem(f, "      ", "ferry:recovery-point", d->recovery_point);
	xml_elem(f, "      ", "ferry:resource-group", d->resource_group);
	xml_elem(f, "      ", "ferry:availability-set", d->availability_set);
	xml_elem(f, "      ", "ferry:subnet", d->subnet);
	for (size_t i = 0; i < d->n_disks; i++) {
		char target[8];
		disk_target(i, target);
		fprintf(f, "      <ferry:disk");
		xml_attr(f, "name", d->disks[i].name);
		xml_attr(f, "target", target);
		fprintf(f, "/>\n");
	}
	for (size_t i = 0; i < d->n_nics; i++) {
		fprintf(f, "      <ferry:nic");
		xml_attr(f, "mac", d->nics[i].mac);
		if (is_set(d->nics[i].address))
			xml_attr(f, "address", d->nics[i].address);
		xml_attr(f, "network", d->nics[i].network);
		fprintf(f, "/>\n");
	}
	fprintf(f, "    </ferry:failover>\n");
	fprintf(f, "  </metadata>\n");
	fprintf(f, "  <memory unit='MiB'>%" PRIu64 "</memory>\n", d->memory_mib);
	fprintf(f, "  <vcpu>%u</vcpu>\n", d->cpus);
	fprintf(f, "  <os>\n");
	fprintf(f, "    <type arch='x86_64' machine='%s'>hvm</type>\n",
		or_default(d->machine, DEFAULT_MACHINE));
	fprintf(f, "  </os>\n");
	fprintf(f, "  <features>\n    <acpi/>\n  </features>\n");
	fprintf(f, "  <cpu mode='%s'/>\n", tcg_first ? "maximum" : "host-passthrough");
	fprintf(f, "  <on_poweroff>destroy</on_poweroff>\n");
	fprintf(f, "  <on_reboot>restart</on_reboot>\n");
	fprintf(f, "  <on_crash>destroy</on_crash>\n");
	fprintf(f, "  <devices>\n");
	for (size_t i = 0; i < d->n_disks; i++) {
		char target[8];
		disk_target(i, target);
		fprintf(f, "    <disk type='file' device='disk'>\n");
		fprintf(f, "      <driver name='qemu' type='raw' cache='%s'/>\n",
			or_default(d->cache, DEFAULT_CACHE));
		fprintf(f, "      <source");
		xml_attr(f, "file", d->disks[i].path);
		/* Clone images live in ferryfs, which keeps no owners: libvirt
		 * must not chown them when it starts or stops the VM (the mount
		 * grants its qemu access instead, docs/failover.md). */
		fprintf(f, ">\n        <seclabel model='dac' relabel='no'/>\n      </source>\n");
		fprintf(f, "      <target dev='%s' bus='virtio'/>\n", target);
		fprintf(f, "      <boot order='%zu'/>\n", i + 1);
		fprintf(f, "    </disk>\n");
	}
	for (size_t i = 0; i < d->n_nics; i++) {
		fprintf(f, "    <interface type='network'>\n");
		fprintf(f, "      <mac");
		xml_attr(f, "address", d->nics[i].mac);
		fprintf(f, "/>\n      <source");
		xml_attr(f, "network", d->nics[i].network);
		fprintf(f, "/>\n");
		fprintf(f, "      <model type='%s'/>\n", or_default(d->nics[i].model, "virtio"));
		fprintf(f, "    </interface>\n");
	}
	fprintf(f, "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n");
	fprintf(f, "    <console type='pty'>\n      <target type='serial' port='0'/>\n"
		   "    </console>\n");
	fprintf(f, "  </devices>\n");
	fprintf(f, "</domain>\n");
	return finish(&f, &buf, ret);
}

/* ---- qemu.args ------------------------------------------------------------------- */

/* One shell word: bare when it is made only of characters no shell treats
 * specially, else single-quoted with each ' written as '\''. */
static void sh_quote(FILE *f, const char *s)
{
	static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				   "0123456789_./:=,@+%-";
	if (*s && strspn(s, safe) == strlen(s)) {
		fputs(s, f);
		return;
	}
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	}
	fputc('\'', f);
}

/* The next word of the command line. */
static void sh_word(FILE *f, const char *s)
{
	fputc(' ', f);
	sh_quote(f, s);
}

/* qemu's option parser splits values at ','; ",," is a literal comma. */
static char *qemu_value(const char *s)
{
	size_t n = strlen(s), commas = 0;
	for (size_t i = 0; i < n; i++)
		commas += s[i] == ',';
	char *out = malloc(n + commas + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		*o++ = s[i];
		if (s[i] == ',')
			*o++ = ',';
	}
	*o = 0;
	return out;
}

/* An argument built from a format whose %s values were run through qemu_value(). */
__attribute__((format(printf, 2, 3))) static int sh_wordf(FILE *f, const char *fmt, ...)
{
	_cleanup_free_ char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	sh_word(f, s);
	return 0;
}

static int parse_v4(const char *s, uint32_t *addr, int *prefix);

/*
 * User networking for a NIC: the guest's DHCP answer is its static address
 * when that fits qemu's user network (host at .2, DNS at .3 of the subnet).
 */
static int user_netdev(FILE *f, size_t i, const struct ferry_vmdef_nic *nic, bool restrict_)
{
	char net[INET_ADDRSTRLEN + 4] = "", start[INET_ADDRSTRLEN] = "";
	uint32_t a;
	int p;
	if (is_set(nic->address) && parse_v4(nic->address, &a, &p) >= 0 && p >= 0) {
		if (p >= 8 && p <= 29) {
			uint32_t mask = ~UINT32_C(0) << (32 - p), host = a & ~mask;
			if (host >= 4 && host != ~mask) {
				struct in_addr na = { htonl(a & mask) }, sa = { htonl(a) };
				char nb[INET_ADDRSTRLEN];
				inet_ntop(AF_INET, &na, nb, sizeof(nb));
				inet_ntop(AF_INET, &sa, start, sizeof(start));
				snprintf(net, sizeof(net), "%s/%d", nb, p);
			}
		}
	}
	return sh_wordf(f, "user,id=net%zu%s%s%s%s%s", i, restrict_ ? ",restrict=on" : "",
			*net ? ",net=" : "", net, *start ? ",dhcpstart=" : "", start);
}

int ferry_vmdef_qemu_args(const struct ferry_vmdef *d, char **ret)
{
	int r = validate(d);
	if (r < 0)
		return r;

	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	_cleanup_fclose_ FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;

	char uuid[37];
	ferry_vmdef_uuid_format(d->uuid, uuid);
	_cleanup_free_ char *name = qemu_value(d->name);
	_cleanup_free_ char *accel = strdup(or_default(d->accel, DEFAULT_ACCEL));
	if (!name || !accel)
		return -ENOMEM;

	sh_quote(f, or_default(d->emulator, DEFAULT_EMULATOR));

	sh_word(f, "-name");
	r = sh_wordf(f, "guest=%s", name);
	if (r < 0)
		return r;
	sh_word(f, "-uuid");
	sh_word(f, uuid);
	sh_word(f, "-no-user-config");
	sh_word(f, "-nodefaults");
	sh_word(f, "-machine");
	sh_word(f, or_default(d->machine, DEFAULT_MACHINE));
	char *save = NULL;
	for (char *a = strtok_r(accel, ":", &save); a; a = strtok_r(NULL, ":", &save)) {
		sh_word(f, "-accel");
		sh_word(f, a);
	}
	sh_word(f, "-cpu");
	sh_word(f, "max");
	sh_word(f, "-smp");
	if ((r = sh_wordf(f, "%u", d->cpus)) < 0)
		return r;
	sh_word(f, "-m");
	if ((r = sh_wordf(f, "%" PRIu64, d->memory_mib)) < 0)
		return r;
	sh_word(f, "-display");
	sh_word(f, "none");
	sh_word(f, "-serial");
	sh_word(f, "mon:stdio");
	for (size_t i = 0; i < d->n_disks; i++) {
		_cleanup_free_ char *path = qemu_value(d->disks[i].path);
		if (!path)
			return -ENOMEM;
		sh_word(f, "-drive");
		r = sh_wordf(f, "file=%s,format=raw,if=none,id=disk%zu,cache=%s", path, i,
			     or_default(d->cache, DEFAULT_CACHE));
		if (r < 0)
			return r;
		sh_word(f, "-device");
		if ((r = sh_wordf(f, "virtio-blk-pci,drive=disk%zu,bootindex=%zu", i, i + 1)) < 0)
			return r;
	}
	for (size_t i = 0; i < d->n_nics; i++) {
		const struct ferry_vmdef_nic *nic = &d->nics[i];
		sh_word(f, "-netdev");
		if (d->net == FERRY_VMDEF_NET_BRIDGE) {
			_cleanup_free_ char *br = qemu_value(nic->network);
			if (!br)
				return -ENOMEM;
			r = sh_wordf(f, "bridge,id=net%zu,br=%s", i, br);
		} else {
			r = user_netdev(f, i, nic, d->kind == FERRY_VMDEF_TEST_FAILOVER);
		}
		if (r < 0)
			return r;
		sh_word(f, "-device");
		const char *model = or_default(nic->model, "virtio");
		if (strcmp(model, "virtio") == 0)
			model = "virtio-net-pci";
		if ((r = sh_wordf(f, "%s,netdev=net%zu,mac=%s", model, i, nic->mac)) < 0)
			return r;
	}
	fputc('\n', f);
	return finish(&f, &buf, ret);
}

/* ---- UUIDs ------------------------------------------------------------------------ */

void ferry_vmdef_uuid_from_seed(const void *seed, size_t len, uint8_t ret[16])
{
	struct ferry_id h;
	ferry_sha256(seed, len, &h);
	memcpy(ret, h.b, 16);
	ret[6] = (uint8_t)((ret[6] & 0x0f) | 0x80); /* version 8: custom */
	ret[8] = (uint8_t)((ret[8] & 0x3f) | 0x80); /* RFC 9562 variant */
}

void ferry_vmdef_uuid_format(const uint8_t uuid[16], char ret[37])
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			ret[o++] = '-';
		ret[o++] = hex[uuid[i] >> 4];
		ret[o++] = hex[uuid[i] & 15];
	}
	ret[o] = 0;
}

/* ---- the static address rule ---------------------------------------------------------- */

/* "a.b.c.d" or "a.b.c.d/p" (prefix -1 when absent). -EAFNOSUPPORT for
 * anything with a ':' (IPv6), -EINVAL for garbage. */
static int parse_v4(const char *s, uint32_t *addr, int *prefix)
{
	char ip[INET_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	int p = -1;

	if (strchr(s, ':'))
		return -EAFNOSUPPORT;
	if (n == 0 || n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, n);
	ip[n] = 0;
	if (slash) {
		const char *q = slash + 1;
		size_t digits = strspn(q, "0123456789");
		if (digits < 1 || digits > 2 || q[digits])
			return -EINVAL;
		p = atoi(q);
		if (p > 32)
			return -EINVAL;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, ip, &a) != 1)
		return -EINVAL;
	*addr = ntohl(a.s_addr);
	*prefix = p;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static bool is_taken(const uint32_t *taken, size_t n, uint32_t a)
{
	return bsearch(&a, taken, n, sizeof(*taken), cmp_u32) != NULL;
}

static int format_v4(uint32_t addr, int prefix, char **ret)
{
	char b[INET_ADDRSTRLEN];
	struct in_addr a = { htonl(addr) };
	if (!inet_ntop(AF_INET, &a, b, sizeof(b)))
		return -errno;
	return asprintf(ret, "%s/%d", b, prefix) < 0 ? -ENOMEM : 0;
}

int ferry_vmdef_pick_address(const char *source, const char *subnet, const char *const *used,
			     size_t n_used, char **ret)
{
	if (!is_set(source) || (n_used && !used))
		return -EINVAL;
	/* The catalog may name a subnet ("default-ferry") rather than give its CIDR. */
	if (!is_set(subnet) || !strchr(subnet, '/')) {
		char *s = strdup(source);
		if (!s)
			return -ENOMEM;
		*ret = s;
		return 0;
	}

	uint32_t net, src = 0;
	int prefix, sp, r;
	if ((r = parse_v4(subnet, &net, &prefix)) < 0)
		return r;
	r = parse_v4(source, &src, &sp);
	if (r == -EINVAL)
		return r;
	bool src_v4 = r >= 0;

	uint32_t mask = prefix ? ~UINT32_C(0) << (32 - prefix) : 0;
	net &= mask;
	uint32_t bcast = net | ~mask;
	if (prefix > 30)
		return -ENOSPC; /* no host addresses besides network and gateway */

	_cleanup_free_ uint32_t *taken = calloc(n_used ? n_used : 1, sizeof(*taken));
	size_t n_taken = 0;
	if (!taken)
		return -ENOMEM;
	for (size_t i = 0; i < n_used; i++) {
		uint32_t a;
		int p;
		if (!used[i])
			return -EINVAL;
		r = parse_v4(used[i], &a, &p);
		if (r == -EAFNOSUPPORT)
			continue; /* another family cannot collide */
		if (r < 0)
			return r;
		taken[n_taken++] = a;
	}
	qsort(taken, n_taken, sizeof(*taken), cmp_u32);

	if (src_v4 && (src & mask) == net && src != net && src != net + 1 && src != bcast &&
	    !is_taken(taken, n_taken, src))
		return format_v4(src, prefix, ret);

	/* At most n_taken candidates are in use, so this ends quickly. */
	for (uint32_t a = net + 2; a < bcast; a++)
		if (!is_taken(taken, n_taken, a))
			return format_v4(a, prefix, ret);
	return -ENOSPC;
}

/* ---- NIC specifications ------------------------------------------------------------ */

/* One item of a NIC specification into n; the key is known, the value
 * NUL-terminated and short. */
static int nic_value(struct ferry_vmdef_nic_spec *n, const char *key, const char *v)
{
	if (strcmp(key, "mac") == 0) {
		if (!mac_ok(v))
			return -EINVAL;
		for (size_t i = 0; i < sizeof(n->mac); i++)
			n->mac[i] = (char)tolower((unsigned char)v[i]);
		return 0;
	}
	if (strcmp(key, "ip") == 0) {
		char b[INET_ADDRSTRLEN];
		struct in_addr a;
		uint32_t addr;
		int prefix, w;

		if (!*v)
			return 0; /* "ip=": none */
		/* A prefix is required: it says where the address lives. */
		if (parse_v4(v, &addr, &prefix) < 0 || prefix < 0)
			return -EINVAL;
		a.s_addr = htonl(addr);
		if (!inet_ntop(AF_INET, &a, b, sizeof(b)))
			return -EINVAL;
		w = snprintf(n->ip, sizeof(n->ip), "%s/%d", b, prefix);
		return w > 0 && (size_t)w < sizeof(n->ip) ? 0 : -EINVAL;
	}
	if (strcmp(key, "model") == 0) {
		if (strlen(v) > FERRY_VMDEF_NIC_MODEL_MAX || !ferry_name_valid(v))
			return -EINVAL;
		strcpy(n->model, v);
		return 0;
	}
	return -EINVAL;
}

int ferry_vmdef_nic_parse(const char *spec, struct ferry_vmdef_nic_spec *ret)
{
	static const char *const keys[] = { "mac", "ip", "model" };
	struct ferry_vmdef_nic_spec n = { .model = "virtio" };
	unsigned seen = 0;

	if (!spec || !ret)
		return -EINVAL;
	for (const char *p = spec; *p;) {
		size_t len = strcspn(p, ","), klen;
		const char *item = p, *eq = memchr(p, '=', len);
		char key[8], value[32];
		size_t k;

		p += len + (p[len] == ',');
		if (len == 0)
			continue; /* ",," */
		if (!eq)
			return -EINVAL;
		klen = (size_t)(eq - item);
		/* A key or a value longer than any valid one. */
		if (klen >= sizeof(key) || len - klen - 1 >= sizeof(value))
			return -EINVAL;
		memcpy(key, item, klen);
		key[klen] = 0;
		memcpy(value, eq + 1, len - klen - 1);
		value[len - klen - 1] = 0;
		for (k = 0; k < ARRAY_SIZE(keys); k++)
			if (strcmp(key, keys[k]) == 0)
				break;
		if (k == ARRAY_SIZE(keys) || (seen & (1u << k)))
			return -EINVAL;
		seen |= 1u << k;
		if (nic_value(&n, key, value) < 0)
			return -EINVAL;
	}
	if (!(seen & 1u))
		return -EINVAL; /* no MAC */
	*ret = n;
	return 0;
}

int ferry_vmdef_nic_format(const struct ferry_vmdef_nic_spec *n, char *buf, size_t size)
{
	int r;

	if (!n || !buf)
		return -EINVAL;
	r = snprintf(buf, size, "mac=%s%s%s,model=%s", n->mac, n->ip[0] ? ",ip=" : "", n->ip,
		     n->model);
	return r < 0 || (size_t)r >= size ? -ENOBUFS : 0;
}

/* ---- vm.conf ---------------------------------------------------------------------- */

int ferry_vmdef_conf(const struct ferry_vm *vm, const struct ferry_disk *disks, size_t n_disks,
		     const struct ferry_vmdef_resource *res, size_t n_res, char **ret,
		     size_t *ret_len)
{
	char *buf = NULL, when[64];
	size_t len = 0;
	FILE *f;

	if (!vm || (n_disks && !disks) || (n_res && !res))
		return -EINVAL;
	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "# ferry: definition and target settings of VM %s (read-only)\n", vm->name);
	fprintf(f, "name = %s\n", vm->name);
	fprintf(f, "state = %s\n", ferry_vm_state_name(vm->state));
	if (vm->error[0])
		fprintf(f, "error = %s\n", vm->error);
	fprintf(f, "cache-url = %s\n", vm->cache_url);
	fprintf(f, "crash-interval = %" PRId64 "\n", vm->crash_interval_s);
	fprintf(f, "app-interval = %" PRId64 "\n", vm->app_interval_s);
	fprintf(f, "retention = %" PRId64 "\n", vm->retention_s);
	ferry_format_time(vm->created_ns, when, sizeof(when));
	fprintf(f, "created = %s\n", when);
	fprintf(f, "applied-seq = %" PRIu64 "\n", vm->applied_seq);
	if (vm->marker_ns > 0) {
		ferry_format_time(vm->marker_ns, when, sizeof(when));
		fprintf(f, "live-time = %s\n", when);
	}
	for (size_t i = 0; i < n_disks; i++) {
		const struct ferry_disk *d = &disks[i];

		fprintf(f, "disk.%u.name = %s\n", d->idx, d->name);
		fprintf(f, "disk.%u.size = %" PRIu64 "\n", d->idx, d->size);
		fprintf(f, "disk.%u.source = %s\n", d->idx, d->source_path);
	}
	for (size_t i = 0; i < n_res; i++)
		fprintf(f, "%s = %s\n", res[i].key, res[i].value);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* ---- failover clones: the catalog's description as a struct ferry_vmdef -------- */

static const char *res_get(const struct ferry_vmdef_failover *f, const char *key)
{
	for (size_t i = 0; i < f->n_res; i++)
		if (strcmp(f->res[i].key, key) == 0)
			return f->res[i].value;
	return NULL;
}

static uint64_t res_uint(const struct ferry_vmdef_failover *f, const char *key, uint64_t def)
{
	const char *s = res_get(f, key);
	uint64_t x;

	if (!s || ferry_parse_u64(s, strlen(s), UINT64_MAX, &x) < 0 || x == 0)
		return def;
	return x;
}

struct nicspec {
	struct ferry_vmdef_nic_spec s;
	char *address; /* as ferry_vmdef_pick_address() put it into the target subnet */
};

static int clone_image_path(const struct ferry_vmdef_failover *f, const struct ferry_clone_disk *d,
			    char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/%s/failovers/%s/%s.img", f->mount, f->vm->name,
			 f->failover->name, d->name);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int failover_render(const struct ferry_vmdef_failover *f, bool xml, char **ret)
{
	struct ferry_vmdef_disk disks[FERRY_VMDEF_MAX_DISKS];
	char paths[FERRY_VMDEF_MAX_DISKS][FERRY_PATH_MAX / 4];
	struct ferry_vmdef_nic nics[FERRY_VMDEF_MAX_NICS];
	struct nicspec specs[FERRY_VMDEF_MAX_NICS] = {};
	char name[2 * FERRY_NAME_MAX + 2], seed[256];
	const struct ferry_vm *v;
	const struct ferry_failover *fo;
	int r = 0;

	if (!f || !f->vm || !f->failover || !f->mount || !f->vault_id || (f->n_res && !f->res) ||
	    (f->n_disks && !f->disks))
		return -EINVAL;
	v = f->vm;
	fo = f->failover;

	struct ferry_vmdef d = {
		.name = name,
		.cpus = (unsigned)MIN(res_uint(f, "vm-cpus", 1), 4096u),
		.memory_mib = res_uint(f, "vm-memory-mib", 1024),
		.accel = fo->accel[0] ? fo->accel : NULL,
		.disks = disks,
		.nics = nics,
		.net = FERRY_VMDEF_NET_USER,
		.kind = fo->kind == FERRY_FAILOVER_REAL ? FERRY_VMDEF_FAILOVER :
							  FERRY_VMDEF_TEST_FAILOVER,
		.source_vm = v->name,
		.recovery_point = fo->point_name,
		.resource_group = res_get(f, "target-group"),
		.availability_set = res_get(f, "availability-set"),
		.subnet = fo->subnet,
	};

	snprintf(name, sizeof(name), "%s-%s", v->name, fo->name);
	snprintf(seed, sizeof(seed), "%s/%s/%s/%" PRId64, f->vault_id, v->name, fo->name, fo->id);
	ferry_vmdef_uuid_from_seed(seed, strlen(seed), d.uuid);
	for (size_t i = 0; r >= 0 && i < f->n_disks && i < FERRY_VMDEF_MAX_DISKS; i++) {
		r = clone_image_path(f, &f->disks[i], paths[i], sizeof(paths[i]));
		disks[i] = (struct ferry_vmdef_disk){ f->disks[i].name, paths[i] };
		d.n_disks++;
	}
	for (size_t i = 0; r >= 0 && d.n_nics < FERRY_VMDEF_MAX_NICS; i++) {
		struct nicspec *n = &specs[d.n_nics];
		const char *spec;
		char key[32];

		snprintf(key, sizeof(key), "nic.%zu", i);
		spec = res_get(f, key);
		if (!spec)
			break;
		r = ferry_vmdef_nic_parse(spec, &n->s);
		if (r < 0)
			break;
		/* A static address stays where the target subnet has room for it;
		 * a subnet given by name only leaves it as it is. */
		if (n->s.ip[0] &&
		    ferry_vmdef_pick_address(n->s.ip, fo->subnet, NULL, 0, &n->address) < 0)
			n->address = NULL;
		nics[d.n_nics++] = (struct ferry_vmdef_nic){
			.mac = n->s.mac,
			.address = n->address ? n->address :
				   n->s.ip[0] ? n->s.ip :
						NULL,
			.network = fo->network,
			.model = n->s.model,
		};
	}
	if (r >= 0)
		r = xml ? ferry_vmdef_domain_xml(&d, ret) : ferry_vmdef_qemu_args(&d, ret);
	for (size_t i = 0; i < ARRAY_SIZE(specs); i++)
		free(specs[i].address);
	return r;
}

int ferry_vmdef_failover_domain_xml(const struct ferry_vmdef_failover *f, char **ret)
{
	return failover_render(f, true, ret);
}

int ferry_vmdef_failover_qemu_args(const struct ferry_vmdef_failover *f, char **ret)
{
	return failover_render(f, false, ret);
}
