/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt for Ferry (virtdom.h): a connection and one domain looked up in
 * it, the calls the libvirt tracker and the CLI make, and the domain XML
 * read into a struct virtdom_info. Every libvirt failure goes through
 * fail(), which keeps libvirt's message for the caller's log line and
 * turns the error code (and, where libvirt has no code of its own for the
 * case, its message) into one -errno. libvirt's default error handler,
 * which prints every error on stderr, is silenced once per process.
 */
#include "virtdom.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "../core/blobs-xml.h"
#include "ferry/util.h"

struct virtdom {
	virConnectPtr conn;
	virDomainPtr dom;
};

static __thread char last_error[1024];

const char *virtdom_last_error(void)
{
	return last_error;
}

static void quiet(void *userdata, virErrorPtr err)
{
}

static void setup_once(void)
{
	(void)virInitialize();
	virSetErrorFunc(NULL, quiet);
}

static void setup(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, setup_once);
}

/* The -errno of libvirt's last error in this thread; keeps its message. */
static int fail(struct virtdom *d)
{
	virErrorPtr e = virGetLastError();
	snprintf(last_error, sizeof(last_error), "%s",
		 e && e->message ? e->message : "unknown libvirt error");
	int code = e ? e->code : VIR_ERR_INTERNAL_ERROR;
	/* Every libvirt call resets the error: from here on only the copy. */
	const char *msg = last_error;
	if (d && d->conn && virConnectIsAlive(d->conn) != 1)
		return -ECONNRESET;
	switch (code) {
	case VIR_ERR_NO_DOMAIN:
	case VIR_ERR_NO_DOMAIN_CHECKPOINT:
	case VIR_ERR_NO_DOMAIN_BACKUP:
	case VIR_ERR_NO_DOMAIN_METADATA:
		return -ENOENT;
	case VIR_ERR_CHECKPOINT_INCONSISTENT:
		return -ESTALE;
	case VIR_ERR_NO_CONNECT:
		return -ECONNREFUSED;
	case VIR_ERR_AUTH_FAILED:
	case VIR_ERR_AUTH_UNAVAILABLE:
	case VIR_ERR_ACCESS_DENIED:
		return -EACCES;
	case VIR_ERR_AGENT_UNRESPONSIVE:
	case VIR_ERR_AGENT_UNSYNCED:
		return -ETIMEDOUT;
	case VIR_ERR_NO_SUPPORT:
	case VIR_ERR_OPERATION_UNSUPPORTED:
	case VIR_ERR_CONFIG_UNSUPPORTED:
		return -EOPNOTSUPP;
	default:
		break;
	}
	/* Cases libvirt gives no code of their own. */
	if (strstr(msg, "is not running"))
		return -ESRCH;
	if (strstr(msg, "no job is active") || strstr(msg, "no domain backup job"))
		return -ENOENT;
	if (strstr(msg, "already exists"))
		return -EEXIST;
	if (strstr(msg, "missing or broken bitmap") || strstr(msg, "inconsistent"))
		return -ESTALE;
	if (strstr(msg, "unsupported for storage type"))
		return -EOPNOTSUPP;
	if ((code == VIR_ERR_OPERATION_INVALID || code == VIR_ERR_OPERATION_TIMEOUT) &&
	    (strstr(msg, "job") || strstr(msg, "state change lock")))
		return -EBUSY;
	if (code == VIR_ERR_OPERATION_TIMEOUT)
		return -ETIMEDOUT;
	if (code == VIR_ERR_SYSTEM_ERROR || code == VIR_ERR_RPC)
		return d ? -ECONNRESET : -ECONNREFUSED;
	return -EIO;
}

/* ---- the domain XML ---- */

static int name_is(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static xmlNode *child(const xmlNode *n, const char *name)
{
	for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
		if (name_is(c, name))
			return c;
	return NULL;
}

/* An attribute, strdup'ed (or NULL when absent); *oom on failure. */
static char *attr(xmlNode *n, const char *name, int *oom)
{
	if (!n)
		return NULL;
	xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
	if (!v)
		return NULL;
	char *s = strdup((const char *)v);
	xmlFree(v);
	if (!s)
		*oom = 1;
	return s;
}

static char *text(xmlNode *n, int *oom)
{
	if (!n)
		return NULL;
	xmlChar *v = xmlNodeGetContent(n);
	if (!v)
		return NULL;
	char *s = strdup((const char *)v);
	xmlFree(v);
	if (!s)
		*oom = 1;
	return s;
}

static int number(const char *s, uint64_t max, uint64_t *ret)
{
	if (!s)
		return -EINVAL;
	s += strspn(s, " \t\n");
	size_t n = strspn(s, "0123456789");
	if (n == 0 || s[n + strspn(s + n, " \t\n")])
		return -EINVAL;
	return ferry_parse_u64(s, n, max, ret);
}

/* <memory unit='...'>N</memory> in KiB. */
static int memory_kib(xmlNode *n, uint64_t *ret)
{
	int oom = 0;
	_cleanup_free_ char *t = text(n, &oom), *unit = attr(n, "unit", &oom);
	uint64_t v;
	if (oom)
		return -ENOMEM;
	if (number(t, UINT64_MAX >> 20, &v) < 0)
		return -EBADMSG;
	static const struct {
		const char *name;
		uint64_t bytes;
	} units[] = {
		{ "b", 1 },          { "bytes", 1 },        { "KB", 1000 },
		{ "k", 1024 },       { "KiB", 1024 },       { "MB", 1000000 },
		{ "M", 1 << 20 },    { "MiB", 1 << 20 },    { "GB", 1000000000 },
		{ "G", 1 << 30 },    { "GiB", 1 << 30 },    { "TB", 1000000000000ull },
		{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
	};
	uint64_t mult = 1024;
	if (unit) {
		mult = 0;
		for (size_t i = 0; i < ARRAY_SIZE(units); i++)
			if (strcmp(unit, units[i].name) == 0)
				mult = units[i].bytes;
		if (!mult)
			return -EBADMSG;
	}
	if (v > UINT64_MAX / mult)
		return -EBADMSG;
	*ret = v * mult / 1024;
	return 0;
}

/* One side of a DAC label: "+N" is a number, anything else a name. */
static int64_t dac_id(const char *s, size_t n, int group)
{
	char buf[256];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = 0;
	if (buf[0] == '+') {
		uint64_t v;
		return ferry_parse_u64(buf + 1, n - 1, UINT32_MAX - 1, &v) < 0 ? -1 : (int64_t)v;
	}
	if (group) {
		struct group g, *res = NULL;
		char tmp[4096];
		return getgrnam_r(buf, &g, tmp, sizeof(tmp), &res) == 0 && res ? (int64_t)g.gr_gid :
										 -1;
	}
	struct passwd pw, *res = NULL;
	char tmp[4096];
	return getpwnam_r(buf, &pw, tmp, sizeof(tmp), &res) == 0 && res ? (int64_t)pw.pw_uid : -1;
}

static int parse_disk(xmlNode *n, struct virtdom_info *i)
{
	int oom = 0;
	struct virtdom_disk dk = { 0 };
	xmlNode *src = child(n, "source");
	dk.target = attr(child(n, "target"), "dev", &oom);
	dk.format = attr(child(n, "driver"), "type", &oom);
	dk.type = attr(n, "type", &oom);
	dk.source = attr(src, "file", &oom);
	if (!dk.source)
		dk.source = attr(src, "dev", &oom);
	if (!dk.source)
		dk.source = attr(src, "name", &oom);
	_cleanup_free_ char *device = attr(n, "device", &oom);
	dk.is_disk = !device || strcmp(device, "disk") == 0;
	struct virtdom_disk *a = oom ? NULL : realloc(i->disks, (i->ndisks + 1) * sizeof(*a));
	if (!a || !dk.target) {
		free(dk.target);
		free(dk.format);
		free(dk.type);
		free(dk.source);
		return a ? 0 : -ENOMEM; /* a disk without a target is nothing to us */
	}
	i->disks = a;
	i->disks[i->ndisks++] = dk;
	return 0;
}

static int parse_nic(xmlNode *n, struct virtdom_info *i)
{
	int oom = 0;
	struct virtdom_nic nic = { attr(child(n, "mac"), "address", &oom),
				   attr(child(n, "model"), "type", &oom) };
	struct virtdom_nic *a = oom ? NULL : realloc(i->nics, (i->nnics + 1) * sizeof(*a));
	if (!a) {
		free(nic.mac);
		free(nic.model);
		return -ENOMEM;
	}
	i->nics = a;
	i->nics[i->nnics++] = nic;
	return 0;
}

static int parse_seclabel(xmlNode *n, struct virtdom_info *i)
{
	int oom = 0;
	_cleanup_free_ char *model = attr(n, "model", &oom);
	_cleanup_free_ char *label = text(child(n, "label"), &oom);
	if (oom)
		return -ENOMEM;
	if (!model || strcmp(model, "dac") != 0 || !label)
		return 0;
	const char *colon = strchr(label, ':');
	if (!colon)
		return 0;
	i->dac_uid = dac_id(label, (size_t)(colon - label), 0);
	i->dac_gid = dac_id(colon + 1, strlen(colon + 1), 1);
	return 0;
}

static int parse_domain(xmlNode *root, struct virtdom_info *i)
{
	int oom = 0;
	if (!name_is(root, "domain"))
		return -EBADMSG;
	i->name = text(child(root, "name"), &oom);
	if (oom)
		return -ENOMEM;
	if (!i->name)
		return -EBADMSG;
	xmlNode *vcpu = child(root, "vcpu");
	_cleanup_free_ char *vt = text(vcpu, &oom), *cur = attr(vcpu, "current", &oom);
	uint64_t v = 1;
	if (oom)
		return -ENOMEM;
	if ((cur || vt) && number(cur ?: vt, 4096, &v) < 0)
		return -EBADMSG;
	i->cpus = (unsigned)MAX(v, (uint64_t)1);
	xmlNode *mem = child(root, "currentMemory") ?: child(root, "memory");
	int r = mem ? memory_kib(mem, &i->memory_kib) : 0;
	if (r < 0)
		return r;
	for (xmlNode *c = child(child(root, "devices"), "disk"); r >= 0 && c; c = c->next)
		if (name_is(c, "disk"))
			r = parse_disk(c, i);
	for (xmlNode *c = child(child(root, "devices"), "interface"); r >= 0 && c; c = c->next)
		if (name_is(c, "interface"))
			r = parse_nic(c, i);
	for (xmlNode *c = root->children; r >= 0 && c; c = c->next)
		if (name_is(c, "seclabel"))
			r = parse_seclabel(c, i);
	return r;
}

int virtdom_parse(const char *xml, size_t len, struct virtdom_info *ret)
{
	_cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
	int r = blobs_xml_parse(xml, len, &doc);
	if (r < 0)
		return r;
	struct virtdom_info i = { .dac_uid = -1, .dac_gid = -1 };
	r = parse_domain(xmlDocGetRootElement(doc), &i);
	if (r < 0) {
		virtdom_info_free(&i);
		return r;
	}
	*ret = i;
	return 0;
}

int virtdom_xml_child_text(const char *xml, const char *name, char **ret)
{
	_cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
	int r = blobs_xml_parse(xml, strlen(xml), &doc);
	if (r < 0)
		return r;
	xmlNode *c = child(xmlDocGetRootElement(doc), name);
	if (!c)
		return -ENOENT;
	int oom = 0;
	char *s = text(c, &oom);
	if (!s)
		return oom ? -ENOMEM : -ENOENT;
	*ret = s;
	return 0;
}

void virtdom_info_free(struct virtdom_info *i)
{
	if (!i)
		return;
	for (size_t k = 0; k < i->ndisks; k++) {
		free(i->disks[k].target);
		free(i->disks[k].source);
		free(i->disks[k].format);
		free(i->disks[k].type);
	}
	for (size_t k = 0; k < i->nnics; k++) {
		free(i->nics[k].mac);
		free(i->nics[k].model);
	}
	free(i->disks);
	free(i->nics);
	free(i->name);
	*i = (struct virtdom_info){ .dac_uid = -1, .dac_gid = -1 };
}

const struct virtdom_disk *virtdom_find_disk(const struct virtdom_info *i, const char *target)
{
	for (size_t k = 0; k < i->ndisks; k++)
		if (strcmp(i->disks[k].target, target) == 0)
			return &i->disks[k];
	return NULL;
}

/* ---- the connection ---- */

int virtdom_open(const char *uri, const char *name, struct virtdom **ret)
{
	setup();
	last_error[0] = 0;
	_cleanup_free_ struct virtdom *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->conn = virConnectOpen(uri ?: VIRTDOM_DEFAULT_URI);
	if (!d->conn) {
		int r = fail(NULL);
		return r == -EIO ? -ECONNREFUSED : r;
	}
	d->dom = virDomainLookupByName(d->conn, name);
	if (!d->dom) {
		int r = fail(d);
		virConnectClose(d->conn);
		return r;
	}
	*ret = TAKE_PTR(d);
	return 0;
}

struct virtdom *virtdom_free(struct virtdom *d)
{
	if (!d)
		return NULL;
	if (d->dom)
		virDomainFree(d->dom);
	if (d->conn)
		virConnectClose(d->conn);
	free(d);
	return NULL;
}

int virtdom_alive(struct virtdom *d)
{
	return d && d->conn && virConnectIsAlive(d->conn) == 1;
}

int virtdom_active(struct virtdom *d)
{
	int r = virDomainIsActive(d->dom);
	return r < 0 ? fail(d) : r;
}

int virtdom_info(struct virtdom *d, int inactive, struct virtdom_info *ret)
{
	char *xml = virDomainGetXMLDesc(d->dom, inactive ? VIR_DOMAIN_XML_INACTIVE : 0);
	if (!xml)
		return fail(d);
	int r = virtdom_parse(xml, strlen(xml), ret);
	free(xml);
	if (r == -EBADMSG)
		snprintf(last_error, sizeof(last_error),
			 "libvirt sent a domain XML Ferry cannot read");
	return r;
}

int virtdom_disk_capacity(struct virtdom *d, const char *target, uint64_t *ret)
{
	virDomainBlockInfo info;
	if (virDomainGetBlockInfo(d->dom, target, &info, 0) < 0)
		return fail(d);
	*ret = info.capacity;
	return 0;
}

void virtdom_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int virtdom_checkpoints(struct virtdom *d, char ***ret, size_t *ret_n)
{
	virDomainCheckpointPtr *cps = NULL;
	int n = virDomainListAllCheckpoints(d->dom, &cps, 0);
	if (n < 0)
		return fail(d);
	char **names = calloc((size_t)n + 1, sizeof(*names));
	int r = names ? 0 : -ENOMEM;
	for (int i = 0; i < n; i++) {
		if (r >= 0 && !(names[i] = strdup(virDomainCheckpointGetName(cps[i]))))
			r = -ENOMEM;
		virDomainCheckpointFree(cps[i]);
	}
	free(cps);
	if (r < 0) {
		virtdom_strv_free(names, (size_t)n);
		return r;
	}
	*ret = names;
	*ret_n = (size_t)n;
	return 0;
}

int virtdom_checkpoint_delete(struct virtdom *d, const char *name)
{
	virDomainCheckpointPtr cp = virDomainCheckpointLookupByName(d->dom, name, 0);
	if (!cp)
		return fail(d);
	int r = virDomainCheckpointDelete(cp, 0) < 0 ? fail(d) : 0;
	virDomainCheckpointFree(cp);
	return r;
}

int virtdom_backup_begin(struct virtdom *d, const char *backup_xml, const char *checkpoint_xml)
{
	return virDomainBackupBegin(d->dom, backup_xml, checkpoint_xml, 0) < 0 ? fail(d) : 0;
}

int virtdom_backup_xml(struct virtdom *d, char **ret)
{
	char *xml = virDomainBackupGetXMLDesc(d->dom, 0);
	if (!xml)
		return fail(d);
	*ret = xml;
	return 0;
}

int virtdom_abort_job(struct virtdom *d)
{
	return virDomainAbortJob(d->dom) < 0 ? fail(d) : 0;
}

int virtdom_fs_freeze(struct virtdom *d)
{
	int r = virDomainFSFreeze(d->dom, NULL, 0, 0);
	return r < 0 ? fail(d) : r;
}

int virtdom_fs_thaw(struct virtdom *d)
{
	int r = virDomainFSThaw(d->dom, NULL, 0, 0);
	return r < 0 ? fail(d) : r;
}

int virtdom_metadata(struct virtdom *d, const char *uri, char **ret)
{
	char *xml = virDomainGetMetadata(d->dom, VIR_DOMAIN_METADATA_ELEMENT, uri,
					 VIR_DOMAIN_AFFECT_CURRENT);
	if (!xml)
		return fail(d);
	*ret = xml;
	return 0;
}

int virtdom_destroy_undefine(struct virtdom *d)
{
	int r = virDomainIsActive(d->dom);
	if (r < 0)
		return fail(d);
	if (r > 0 && virDomainDestroy(d->dom) < 0)
		return fail(d);
	if (virDomainUndefineFlags(d->dom, VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA |
						   VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
						   VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
						   VIR_DOMAIN_UNDEFINE_NVRAM) < 0)
		return fail(d);
	return 0;
}
