/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the ferry CLI asks of libvirt (virtdom.h): `enable-replication
 * --libvirt-domain` takes the VM's disks, CPUs, memory and NICs from the
 * domain's XML rather than from flags, and refuses a disk the libvirt
 * tracker cannot follow (not qcow2) before anything is registered; and
 * `test-failover-cleanup` undefines the domain that `virsh define` made
 * from a failover's domain.xml, once it is sure the domain is that
 * failover's (Ferry's metadata names the VM and the kind).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vmdef.h"
#include "virtdom.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct virtdom *, virtdom_free)

static int open_domain(const char *uri, const char *name, struct virtdom **ret)
{
	int r = virtdom_open(uri, name, ret);
	if (r == -ENOENT)
		log_error("libvirt at %s has no domain named '%s' (virsh -c %s list --all)",
			  uri ?: VIRTDOM_DEFAULT_URI, name, uri ?: VIRTDOM_DEFAULT_URI);
	else if (r < 0)
		log_error("cannot connect to libvirt at %s: %s (is libvirtd running, and may "
			  "this user use it?)",
			  uri ?: VIRTDOM_DEFAULT_URI, virtdom_last_error());
	return r;
}

/* A disk the libvirt tracker can follow: a disk (not a cdrom) in qcow2. */
static int check_disk(const char *domain, const char *name, const struct virtdom_disk *d)
{
	if (!d->is_disk) {
		log_error("domain %s: target %s is not a disk (a cdrom or floppy): it cannot be "
			  "replicated",
			  domain, d->target);
		return -EINVAL;
	}
	if (!d->format || strcmp(d->format, "qcow2") != 0) {
		log_error("disk %s (target %s, %s) of domain %s is %s, not qcow2: libvirt keeps "
			  "checkpoints, and so incremental backups, of qcow2 disks only; convert "
			  "it while the domain is shut off (qemu-img convert -O qcow2) and point "
			  "the domain at the copy, or name the other disks with --disk "
			  "NAME=TARGET",
			  name, d->target, d->source ?: "no source", domain,
			  d->format ?: "of no format");
		return -EOPNOTSUPP;
	}
	return 0;
}

int enable_from_libvirt(struct enable_args *a, struct libvirt_fill *f)
{
	const char *dom = a->libvirt_domain;
	if (a->nnics || a->cpus != 1 || a->memory != 1024) {
		log_error("--cpus, --memory and --nic come from the domain with --libvirt-domain");
		return -EINVAL;
	}
	if (a->tracker && strcmp(a->tracker, "libvirt") != 0) {
		log_error("--libvirt-domain goes with the libvirt tracker, not '%s'", a->tracker);
		return -EINVAL;
	}
	if (a->qmp || a->nbd_socket || a->qga) {
		log_error("--qmp, --nbd-socket and --qga are for the qemu tracker; libvirt owns "
			  "the qemu of domain %s",
			  dom);
		return -EINVAL;
	}
	_cleanup_(virtdom_freep) struct virtdom *d = NULL;
	int r = open_domain(a->connect, dom, &d);
	if (r < 0)
		return r;
	struct virtdom_info info;
	r = virtdom_info(d, 0, &info);
	if (r < 0)
		return log_error_errno(r, "domain %s: cannot read its XML: %s", dom,
				       virtdom_last_error());
	/* Every disk of the domain, named by its target, unless --disk
	 * chose some: NAME=TARGET. */
	if (a->ndisks == 0) {
		for (size_t i = 0; r >= 0 && i < info.ndisks; i++) {
			const struct virtdom_disk *vd = &info.disks[i];
			if (!vd->is_disk)
				continue;
			if (a->ndisks == MAX_CLI_DISKS) {
				log_error("domain %s has more than %d disks", dom, MAX_CLI_DISKS);
				r = -E2BIG;
				break;
			}
			r = check_disk(dom, vd->target, vd);
			snprintf(f->names[a->ndisks], sizeof(f->names[0]), "%s", vd->target);
			snprintf(f->targets[a->ndisks], sizeof(f->targets[0]), "%s", vd->target);
			a->disk_names[a->ndisks] = f->names[a->ndisks];
			a->disk_paths[a->ndisks] = f->targets[a->ndisks];
			a->ndisks++;
		}
		if (r >= 0 && a->ndisks == 0) {
			log_error("domain %s has no disk", dom);
			r = -ENOENT;
		}
	} else {
		for (size_t i = 0; r >= 0 && i < a->ndisks; i++) {
			const struct virtdom_disk *vd = virtdom_find_disk(&info, a->disk_paths[i]);
			if (!vd) {
				log_error("domain %s has no disk with target '%s' (--disk %s=%s; "
					  "virsh domblklist %s)",
					  dom, a->disk_paths[i], a->disk_names[i], a->disk_paths[i],
					  dom);
				r = -ENOENT;
				break;
			}
			r = check_disk(dom, a->disk_names[i], vd);
		}
	}
	/* What a failover of it gets: the domain's CPUs, memory and NICs. */
	if (r >= 0) {
		a->cpus = MIN(MAX(info.cpus, 1u), 1024u);
		a->memory = MAX(DIV_ROUND_UP(info.memory_kib, 1024), (uint64_t)16);
	}
	for (size_t i = 0; r >= 0 && i < info.nnics; i++) {
		const struct virtdom_nic *n = &info.nics[i];
		if (!n->mac || a->nnics == MAX_CLI_NICS)
			continue;
		struct ferry_vmdef_nic_spec spec;
		snprintf(f->nics[a->nnics], sizeof(f->nics[0]), "mac=%s%s%s", n->mac,
			 n->model ? ",model=" : "", n->model ?: "");
		if (ferry_vmdef_nic_parse(f->nics[a->nnics], &spec) < 0) {
			/* A model a failover would not take: the default one. */
			snprintf(f->nics[a->nnics], sizeof(f->nics[0]), "mac=%s", n->mac);
			if (ferry_vmdef_nic_parse(f->nics[a->nnics], &spec) < 0)
				continue;
			log_warning("domain %s: NIC %s: model '%s' is not one a failover takes; "
				    "its failover gets virtio",
				    dom, n->mac, n->model);
		}
		a->nics[a->nnics] = f->nics[a->nnics];
		a->nnics++;
	}
	virtdom_info_free(&info);
	if (r < 0)
		return r;
	a->tracker = "libvirt";
	return 0;
}

/* Whether the metadata of a failover's domain says it is VM vm's test
 * failover (domain.xml's <ferry:failover>, vmdef.h). */
static int is_test_failover_of(const char *xml, const char *vm)
{
	_cleanup_free_ char *kind = NULL, *source = NULL;
	return virtdom_xml_child_text(xml, "kind", &kind) >= 0 &&
	       virtdom_xml_child_text(xml, "source-vm", &source) >= 0 &&
	       strcmp(kind, "test-failover") == 0 && strcmp(source, vm) == 0;
}

int libvirt_undefine_failover(const char *uri, const char *vm, const char *failover)
{
	char name[2 * FERRY_NAME_MAX + 2];
	snprintf(name, sizeof(name), "%s-%s", vm, failover);
	_cleanup_(virtdom_freep) struct virtdom *d = NULL;
	int r = virtdom_open(uri, name, &d);
	if (r == -ENOENT)
		return 0; /* never defined, or undefined already */
	if (r < 0) {
		log_warning("cannot reach libvirt at %s to undefine domain %s: %s; if it was "
			    "defined from the failover, run: virsh undefine %s",
			    uri ?: VIRTDOM_DEFAULT_URI, name, virtdom_last_error(), name);
		return r;
	}
	_cleanup_free_ char *meta = NULL;
	r = virtdom_metadata(d, FERRY_VMDEF_XMLNS, &meta);
	if (r < 0 || !is_test_failover_of(meta, vm)) {
		log_warning("libvirt domain %s is not test failover '%s' of VM %s (its metadata "
			    "does not say so): left alone",
			    name, failover, vm);
		return -EEXIST;
	}
	r = virtdom_destroy_undefine(d);
	if (r < 0) {
		log_warning("cannot undefine libvirt domain %s: %s; run: virsh destroy %s; "
			    "virsh undefine %s",
			    name, virtdom_last_error(), name, name);
		return r;
	}
	fprintf(stderr, "Libvirt domain %s (the test failover's VM) undefined.\n", name);
	return 1;
}
