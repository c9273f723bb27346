"""The reaper: deletes what an inventory found, in dependency order, with retries, re-checking tags before each delete.

Safety, as the chaos faults do it: right before each delete the resource's
tags are read again, and a resource without both this tool's ``Run`` tag (of
the run being reaped) and its ``ExpiresAt`` tag is refused, never touched.
A dry run makes describe calls only.

Order (see :data:`immutable_infra.inventory.KINDS`): Route53 zones (records
first), load balancers, target groups, instances (waited until terminated),
NAT gateways (waited until deleted), peerings, Elastic IPs (disassociated
first), interfaces, security groups (rules that reference other groups
revoked first), subnets, route tables (associations first), internet
gateways (detached first), network ACLs, VPCs, DHCP options, volumes, S3
buckets (objects first). A delete that fails is tried again in the next pass,
after a pause that grows, for AWS's eventual consistency.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from immutable_infra.inventory import (GLOBAL, ClientFactory, Inventory, Resource, is_ours, order_key, parse_time, tags_of,
                                      take)

#: Pauses between passes against real AWS (its dependency errors clear within a minute or two).
AWS_RETRY_DELAYS = (2.0, 5.0, 10.0, 20.0, 30.0)
#: Against an AWS-compatible endpoint (moto, LocalStack) there is no eventual consistency to wait for.
ENDPOINT_RETRY_DELAYS = (0.5, 1.0, 2.0)
#: How long to wait for instances to terminate and NAT gateways to go.
WAIT_SECONDS = 600

GONE_CODES = {
    "InvalidInstanceID.NotFound", "InvalidNatGatewayID.NotFound", "NatGatewayNotFound", "InvalidAllocationID.NotFound",
    "InvalidNetworkInterfaceID.NotFound", "InvalidGroup.NotFound", "InvalidSubnetID.NotFound",
    "InvalidRouteTableID.NotFound", "InvalidInternetGatewayID.NotFound", "InvalidNetworkAclID.NotFound",
    "InvalidVpcPeeringConnectionID.NotFound", "InvalidVpcID.NotFound", "InvalidDhcpOptionID.NotFound",
    "InvalidVolume.NotFound", "LoadBalancerNotFound", "TargetGroupNotFound", "NoSuchHostedZone", "NoSuchBucket",
    "AccessPointNotFound",
}


_CLIENT_LOCK = threading.Lock()


def cached_clients(client: ClientFactory) -> ClientFactory:
    """One client per (service, region), created under a lock (boto3's default session is not thread-safe)."""
    cache: dict[tuple[str, str], Any] = {}

    def get(service: str, region: str) -> Any:
        with _CLIENT_LOCK:
            if (service, region) not in cache:
                cache[(service, region)] = client(service, region)
            return cache[(service, region)]

    return get


class Refused(Exception):
    """The resource's tags no longer say it belongs to the run: it is left alone."""


class Gone(Exception):
    """The resource no longer exists."""


@dataclass
class Outcome:
    """What a reap did: deleted, refused (tags changed), left (could not delete: the last error)."""

    deleted: list[Resource] = field(default_factory=list)
    refused: dict[Resource, str] = field(default_factory=dict)
    left: dict[Resource, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.left

    def problems(self) -> list[str]:
        return [f"{r}: {why}" for r, why in sorted(self.left.items(), key=lambda kv: order_key(kv[0]))]


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def _message(exc: Exception) -> str:
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    return f"{err.get('Code')}: {err.get('Message')}" if err else f"{type(exc).__name__}: {exc}"


class Reaper:
    """Deletes the resources of one run (or of several expired runs), safely."""

    def __init__(self, client: ClientFactory, regions: list[str], say: Callable[[str], None] | None = None,
                 retry_delays: tuple[float, ...] = AWS_RETRY_DELAYS, wait_seconds: float = WAIT_SECONDS) -> None:
        self.client = client
        self.regions = regions
        self.say = say or (lambda line: None)
        self.retry_delays = retry_delays
        self.wait_seconds = wait_seconds

    def _c(self, service: str, region: str) -> Any:
        return self.client(service, self.regions[0] if region == GLOBAL else region)

    # -- the loop ----------------------------------------------------------------------

    def reap(self, inventory: Inventory, run_ids: set[str] | None = None) -> Outcome:
        """Delete every resource of the inventory that still carries its run's tags (of ``run_ids`` when given)."""
        out = Outcome()
        todo = sorted((r for r in inventory.resources if run_ids is None or r.run in run_ids), key=order_key)
        for r in [r for r in todo if r.kind.startswith("unknown")]:
            out.left[r] = "a type the reaper does not know how to delete; delete it by hand"
        todo = [r for r in todo if not r.kind.startswith("unknown")]
        for attempt in range(len(self.retry_delays) + 1):
            failed: list[Resource] = []
            self._prepare(todo)
            for r in todo:
                try:
                    self._delete_checked(r)
                except Gone:
                    out.left.pop(r, None)  # went by itself (with its VPC, its instance, its load balancer)
                except Refused as why:
                    out.left.pop(r, None)
                    out.refused[r] = str(why)
                    self.say(f"refused {r}: {why}")
                except Exception as exc:  # tried again: eventual consistency, a dependency still going
                    out.left[r] = _message(exc)
                    failed.append(r)
                else:
                    out.left.pop(r, None)
                    out.deleted.append(r)
                    self.say(f"deleted {r}")
            if not failed:
                break
            if attempt < len(self.retry_delays):
                time.sleep(self.retry_delays[attempt])
            todo = failed
        return out

    def _delete_checked(self, r: Resource) -> None:
        tags = self.fresh_tags(r)
        if not is_ours(tags, r.run):
            missing = [k for k in ("Run", "ExpiresAt") if not tags.get(k)]
            why = f"no {' or '.join(missing)} tag" if missing else f"tagged Run={tags.get('Run')}, not {r.run}"
            raise Refused(why + " any more")
        self.delete(r)

    def _prepare(self, todo: list[Resource]) -> None:
        """Revoke rules between the run's security groups, so none holds another (tags checked first)."""
        groups = [r for r in todo if r.kind == "security_group"]
        for r in groups:
            ec2 = self._c("ec2", r.region)
            try:
                if not is_ours(self.fresh_tags(r), r.run):
                    continue
                g = ec2.describe_security_groups(GroupIds=[r.id])["SecurityGroups"][0]
            except Exception:
                continue
            ingress = [p for p in g.get("IpPermissions", []) if p.get("UserIdGroupPairs")]
            egress = [p for p in g.get("IpPermissionsEgress", []) if p.get("UserIdGroupPairs")]
            try:
                if ingress:
                    ec2.revoke_security_group_ingress(GroupId=r.id, IpPermissions=ingress)
                if egress:
                    ec2.revoke_security_group_egress(GroupId=r.id, IpPermissions=egress)
            except Exception:
                pass  # the delete below reports what keeps the group

    # -- tags right before the delete -------------------------------------------------------

    def fresh_tags(self, r: Resource) -> dict[str, str]:
        """The resource's tags now; raises Gone when it no longer exists."""
        try:
            return self._fresh_tags(r)
        except Gone:
            raise
        except Exception as exc:
            if _code(exc) in GONE_CODES:
                raise Gone(str(r)) from None
            raise

    def _fresh_tags(self, r: Resource) -> dict[str, str]:
        kind = r.kind
        if kind in EC2_DESCRIBE:
            method, arg, key, tag_key = EC2_DESCRIBE[kind]
            items = getattr(self._c("ec2", r.region), method)(**{arg: [r.id]})[key]
            if not items:
                raise Gone(str(r))
            if kind == "instance":
                inst = items[0]["Instances"][0]
                if inst["State"]["Name"] == "terminated":
                    raise Gone(str(r))
                return tags_of(inst.get("Tags"))
            if kind == "nat_gateway" and items[0]["State"] in ("deleted", "failed"):
                raise Gone(str(r))
            return tags_of(items[0].get(tag_key))
        if kind == "elb":
            d = self._c("elb", r.region).describe_tags(LoadBalancerNames=[r.id])["TagDescriptions"]
            if not d:
                raise Gone(str(r))
            return tags_of(d[0].get("Tags"))
        if kind in ("lb", "target_group"):
            d = self._c("elbv2", r.region).describe_tags(ResourceArns=[r.id])["TagDescriptions"]
            if not d:
                raise Gone(str(r))
            return tags_of(d[0].get("Tags"))
        if kind == "route53_zone":
            return tags_of(self._c("route53", r.region).list_tags_for_resource(
                ResourceType="hostedzone", ResourceId=r.id)["ResourceTagSet"].get("Tags"))
        if kind == "s3_bucket":
            try:
                return tags_of(self._c("s3", r.region).get_bucket_tagging(Bucket=r.id).get("TagSet"))
            except Exception as exc:
                if _code(exc) == "NoSuchTagSet":
                    return {}
                raise
        raise Refused(f"unknown kind {kind}")

    # -- deletes ---------------------------------------------------------------------------

    def delete(self, r: Resource) -> None:
        getattr(self, "_delete_" + r.kind)(r)

    def _delete_route53_zone(self, r: Resource) -> None:
        r53 = self._c("route53", r.region)
        changes = []
        kw: dict[str, Any] = {"HostedZoneId": r.id}
        while True:
            page = r53.list_resource_record_sets(**kw)
            changes += [{"Action": "DELETE", "ResourceRecordSet": rr} for rr in page["ResourceRecordSets"]
                        if rr["Type"] not in ("SOA", "NS")]
            if not page.get("IsTruncated"):
                break
            kw.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])
        for i in range(0, len(changes), 100):
            r53.change_resource_record_sets(HostedZoneId=r.id, ChangeBatch={"Changes": changes[i:i + 100]})
        r53.delete_hosted_zone(Id=r.id)

    def _delete_elb(self, r: Resource) -> None:
        self._c("elb", r.region).delete_load_balancer(LoadBalancerName=r.id)

    def _delete_lb(self, r: Resource) -> None:
        self._c("elbv2", r.region).delete_load_balancer(LoadBalancerArn=r.id)

    def _delete_target_group(self, r: Resource) -> None:
        self._c("elbv2", r.region).delete_target_group(TargetGroupArn=r.id)

    def _delete_instance(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        ec2.terminate_instances(InstanceIds=[r.id])
        self._wait(lambda: ec2.describe_instances(InstanceIds=[r.id])["Reservations"][0]["Instances"][0]["State"]["Name"]
                   == "terminated", r)

    def _delete_nat_gateway(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        ec2.delete_nat_gateway(NatGatewayId=r.id)
        self._wait(lambda: ec2.describe_nat_gateways(NatGatewayIds=[r.id])["NatGateways"][0]["State"] in ("deleted", "failed"), r)

    def _delete_vpc_peering(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_vpc_peering_connection(VpcPeeringConnectionId=r.id)

    def _delete_elastic_ip(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        address = ec2.describe_addresses(AllocationIds=[r.id])["Addresses"][0]
        if address.get("AssociationId"):
            ec2.disassociate_address(AssociationId=address["AssociationId"])
        ec2.release_address(AllocationId=r.id)

    def _delete_network_interface(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[r.id])["NetworkInterfaces"][0]
        attachment = eni.get("Attachment") or {}
        if attachment.get("AttachmentId") and attachment.get("DeviceIndex", 0) != 0:
            ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"], Force=True)
        ec2.delete_network_interface(NetworkInterfaceId=r.id)

    def _delete_security_group(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_security_group(GroupId=r.id)

    def _delete_subnet(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_subnet(SubnetId=r.id)

    def _delete_route_table(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        table = ec2.describe_route_tables(RouteTableIds=[r.id])["RouteTables"][0]
        for a in table.get("Associations", []):
            if a.get("Main"):
                raise Gone(str(r))  # the main route table goes with its VPC
            ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"])
        ec2.delete_route_table(RouteTableId=r.id)

    def _delete_internet_gateway(self, r: Resource) -> None:
        ec2 = self._c("ec2", r.region)
        gw = ec2.describe_internet_gateways(InternetGatewayIds=[r.id])["InternetGateways"][0]
        for a in gw.get("Attachments", []):
            ec2.detach_internet_gateway(InternetGatewayId=r.id, VpcId=a["VpcId"])
        ec2.delete_internet_gateway(InternetGatewayId=r.id)

    def _delete_network_acl(self, r: Resource) -> None:
        if r.state == "default":
            raise Gone(str(r))  # the default ACL goes with its VPC
        self._c("ec2", r.region).delete_network_acl(NetworkAclId=r.id)

    def _delete_vpc(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_vpc(VpcId=r.id)

    def _delete_dhcp_options(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_dhcp_options(DhcpOptionsId=r.id)

    def _delete_volume(self, r: Resource) -> None:
        self._c("ec2", r.region).delete_volume(VolumeId=r.id)

    def _delete_s3_bucket(self, r: Resource) -> None:
        s3 = self._c("s3", r.region)
        for method, key in ((s3.list_object_versions, "Versions"), (s3.list_object_versions, "DeleteMarkers")):
            page = method(Bucket=r.id)
            objects = [{"Key": o["Key"], "VersionId": o["VersionId"]} for o in page.get(key, []) if o.get("VersionId")]
            for i in range(0, len(objects), 1000):
                s3.delete_objects(Bucket=r.id, Delete={"Objects": objects[i:i + 1000]})
        for o in s3.list_objects_v2(Bucket=r.id).get("Contents", []):
            s3.delete_object(Bucket=r.id, Key=o["Key"])
        s3.delete_bucket(Bucket=r.id)

    def _wait(self, done: Callable[[], bool], r: Resource) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still not gone after {self.wait_seconds:.0f} s")
            time.sleep(2.0)


#: kind -> (describe method, id argument, result key, tags key)
EC2_DESCRIBE = {
    "instance": ("describe_instances", "InstanceIds", "Reservations", "Tags"),
    "nat_gateway": ("describe_nat_gateways", "NatGatewayIds", "NatGateways", "Tags"),
    "elastic_ip": ("describe_addresses", "AllocationIds", "Addresses", "Tags"),
    "network_interface": ("describe_network_interfaces", "NetworkInterfaceIds", "NetworkInterfaces", "TagSet"),
    "security_group": ("describe_security_groups", "GroupIds", "SecurityGroups", "Tags"),
    "subnet": ("describe_subnets", "SubnetIds", "Subnets", "Tags"),
    "route_table": ("describe_route_tables", "RouteTableIds", "RouteTables", "Tags"),
    "internet_gateway": ("describe_internet_gateways", "InternetGatewayIds", "InternetGateways", "Tags"),
    "network_acl": ("describe_network_acls", "NetworkAclIds", "NetworkAcls", "Tags"),
    "vpc_peering": ("describe_vpc_peering_connections", "VpcPeeringConnectionIds", "VpcPeeringConnections", "Tags"),
    "vpc": ("describe_vpcs", "VpcIds", "Vpcs", "Tags"),
    "dhcp_options": ("describe_dhcp_options", "DhcpOptionsIds", "DhcpOptions", "Tags"),
    "volume": ("describe_volumes", "VolumeIds", "Volumes", "Tags"),
}


# -- choosing runs: by id, by ExpiresAt, by age ----------------------------------------------


def select_runs(inv: Inventory, run_id: str | None = None, older_than_hours: float | None = None,
                now: dt.datetime | None = None) -> dict[str, str]:
    """Runs of the inventory to reap, each with why: named, expired (``ExpiresAt`` past), or older than asked."""
    now = now or dt.datetime.now(dt.timezone.utc)
    chosen: dict[str, str] = {}
    for run, resources in sorted(inv.runs().items()):
        if run_id is not None:
            if run == run_id:
                chosen[run] = "named with --run-id"
            continue
        if older_than_hours is not None:
            created = [t for t in (parse_time(r.tags.get("CreatedAt", "")) for r in resources) if t]
            if created and now - min(created) > dt.timedelta(hours=older_than_hours):
                chosen[run] = f"created {min(created).isoformat()}, more than {older_than_hours:g} h ago"
            continue
        expires = [t for t in (parse_time(r.tags.get("ExpiresAt", "")) for r in resources) if t]
        if expires and max(expires) < now:
            chosen[run] = f"expired at {max(expires).isoformat()}"
    return chosen


def reap_runs(client: ClientFactory, regions: list[str], run_id: str | None = None, older_than_hours: float | None = None,
              dry_run: bool = False, say: Callable[[str], None] | None = None,
              retry_delays: tuple[float, ...] = AWS_RETRY_DELAYS) -> tuple[dict[str, str], Inventory, Outcome]:
    """Find the runs to reap from the tags alone (no local state needed) and delete their resources.

    With ``dry_run`` only describe calls are made; the returned outcome is empty.
    """
    client = cached_clients(client)
    inv = take(client, regions, run_id)
    chosen = select_runs(inv, run_id, older_than_hours)
    picked = Inventory([r for r in inv.resources if r.run in chosen], list(inv.errors))
    if dry_run or not picked.resources:
        return chosen, picked, Outcome()
    outcome = Reaper(client, regions, say=say, retry_delays=retry_delays).reap(picked, set(chosen))
    return chosen, picked, outcome
