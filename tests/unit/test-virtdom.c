/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The domain XML reader of the libvirt tracker and CLI
 * (replicator/lib/virtdom.h), without a libvirtd: a live domain as libvirt
 * 9.0 writes it (qcow2 and raw disks, a cdrom, NICs, the DAC label libvirt
 * gives qemu), CPUs from <vcpu current>, memory in every unit libvirt
 * accepts, what a failover's <metadata> hands back; and what must fail
 * cleanly: no XML, a DOCTYPE (no entity is ever expanded), another root,
 * a unit that is not one, a count that is not a number.
 */
#include "virtdom.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static const char live[] = "<domain type='qemu' id='3'>\n"
			   "  <name>web1</name>\n"
			   "  <memory unit='KiB'>262144</memory>\n"
			   "  <currentMemory unit='KiB'>262144</currentMemory>\n"
			   "  <vcpu placement='static' current='2'>4</vcpu>\n"
			   "  <devices>\n"
			   "    <disk type='file' device='disk'>\n"
			   "      <driver name='qemu' type='qcow2'/>\n"
			   "      <source file='/var/lib/libvirt/images/web1.qcow2' index='2'/>\n"
			   "      <target dev='vda' bus='virtio'/>\n"
			   "    </disk>\n"
			   "    <disk type='block' device='disk'>\n"
			   "      <driver name='qemu' type='raw' cache='none'/>\n"
			   "      <source dev='/dev/vg0/web1-data'/>\n"
			   "      <target dev='vdb' bus='virtio'/>\n"
			   "    </disk>\n"
			   "    <disk type='file' device='cdrom'>\n"
			   "      <driver name='qemu' type='raw'/>\n"
			   "      <target dev='sda' bus='sata'/>\n"
			   "      <readonly/>\n"
			   "    </disk>\n"
			   "    <interface type='network'>\n"
			   "      <mac address='52:54:00:aa:bb:cc'/>\n"
			   "      <source network='default'/>\n"
			   "      <model type='virtio'/>\n"
			   "    </interface>\n"
			   "    <interface type='user'>\n"
			   "      <mac address='52:54:00:aa:bb:cd'/>\n"
			   "    </interface>\n"
			   "  </devices>\n"
			   "  <seclabel type='dynamic' model='dac' relabel='yes'>\n"
			   "    <label>+64055:+108</label>\n"
			   "    <imagelabel>+64055:+108</imagelabel>\n"
			   "  </seclabel>\n"
			   "</domain>\n";

static int parse(const char *xml, struct virtdom_info *i)
{
	return virtdom_parse(xml, strlen(xml), i);
}

static uint64_t memory_of(const char *unit, const char *value)
{
	char xml[256];
	snprintf(xml, sizeof(xml), "<domain><name>m</name><memory unit='%s'>%s</memory></domain>",
		 unit, value);
	struct virtdom_info i;
	if (parse(xml, &i) < 0)
		return UINT64_MAX;
	uint64_t kib = i.memory_kib;
	virtdom_info_free(&i);
	return kib;
}

int main(void)
{
	struct virtdom_info i;
	ok_r(parse(live, &i), "a live domain parses");
	ok(strcmp(i.name, "web1") == 0, "name");
	ok(i.cpus == 2, "CPUs from <vcpu current>: %u", i.cpus);
	ok(i.memory_kib == 262144, "memory in KiB");
	ok(i.ndisks == 3, "three disks, the cdrom too: %zu", i.ndisks);
	const struct virtdom_disk *d = virtdom_find_disk(&i, "vda");
	ok(d && d->is_disk && strcmp(d->format, "qcow2") == 0 &&
		   strcmp(d->source, "/var/lib/libvirt/images/web1.qcow2") == 0 &&
		   strcmp(d->type, "file") == 0,
	   "vda: a qcow2 file");
	d = virtdom_find_disk(&i, "vdb");
	ok(d && d->is_disk && strcmp(d->format, "raw") == 0 &&
		   strcmp(d->source, "/dev/vg0/web1-data") == 0 && strcmp(d->type, "block") == 0,
	   "vdb: a raw block device, its source from dev=");
	d = virtdom_find_disk(&i, "sda");
	ok(d && !d->is_disk && !d->source, "sda: a cdrom without a medium");
	ok(!virtdom_find_disk(&i, "vdc"), "no vdc");
	ok(i.nnics == 2 && strcmp(i.nics[0].mac, "52:54:00:aa:bb:cc") == 0 &&
		   strcmp(i.nics[0].model, "virtio") == 0 && !i.nics[1].model,
	   "two NICs, a model where given");
	ok(i.dac_uid == 64055 && i.dac_gid == 108, "the DAC label: qemu's uid and gid");
	virtdom_info_free(&i);
	ok(!i.name && i.ndisks == 0 && i.dac_uid == -1, "freed and reset");

	ok_r(parse("<domain><name>n</name><vcpu>3</vcpu></domain>", &i), "a bare domain");
	ok(i.cpus == 3 && i.memory_kib == 0 && i.ndisks == 0 && i.dac_uid == -1 && i.dac_gid == -1,
	   "CPUs from <vcpu>, nothing else known");
	virtdom_info_free(&i);
	ok_r(parse("<domain><name>n</name><seclabel model='dac'><label>root:root</label>"
		   "</seclabel></domain>",
		   &i),
	     "a label by names");
	ok(i.dac_uid == 0 && i.dac_gid == 0, "names resolved");
	virtdom_info_free(&i);

	ok(memory_of("KiB", "1024") == 1024, "KiB");
	ok(memory_of("MiB", "256") == 262144, "MiB");
	ok(memory_of("G", "1") == 1048576, "G");
	ok(memory_of("bytes", "1048576") == 1024, "bytes");
	ok(memory_of("MB", "1") == 976, "MB (decimal)");
	ok(memory_of("parsec", "1") == UINT64_MAX, "an unknown unit fails");
	ok(memory_of("KiB", "12x") == UINT64_MAX, "a number that is not one fails");

	ok(parse("", &i) == -EBADMSG, "empty");
	ok(parse("<domain>", &i) == -EBADMSG, "not well-formed");
	ok(parse("<network><name>n</name></network>", &i) == -EBADMSG, "another root");
	ok(parse("<domain><vcpu>1</vcpu></domain>", &i) == -EBADMSG, "no name");
	ok(parse("<domain><name>n</name><vcpu>lots</vcpu></domain>", &i) == -EBADMSG,
	   "CPUs that are no number");
	ok(parse("<!DOCTYPE d [<!ENTITY x 'boom'>]><domain><name>&x;</name></domain>", &i) ==
		   -EBADMSG,
	   "a DOCTYPE is refused");

	char *s = NULL;
	ok_r(virtdom_xml_child_text("<failover>\n  <kind>test-failover</kind>\n"
				    "  <source-vm>web1</source-vm>\n</failover>\n",
				    "source-vm", &s),
	     "failover metadata as libvirt hands it back");
	ok(s && strcmp(s, "web1") == 0, "its source VM");
	free(s);
	ok(virtdom_xml_child_text("<failover/>", "kind", &s) == -ENOENT, "no kind: -ENOENT");
	ok(virtdom_xml_child_text("junk", "kind", &s) == -EBADMSG, "no XML: -EBADMSG");
	return tap_done();
}
