"""The tag inventory of a run: everything that carries its ``Run`` tag, found by describe calls and the tagging API.

The state file is not the truth about what exists: the tags are. Every
resource a run creates carries ``Run``, ``ExpiresAt`` (and ``Group``,
``CreatedAt``) through the provider's ``default_tags``, so a run that died
before Terraform wrote its state is still found here.

Each known type is listed by its own describe call with a tag filter (that
also tells a terminated instance from a live one); the Resource Groups
Tagging API then sweeps each region for anything tagged with the run whose
type the reaper does not know, so such a resource is reported as left rather
than silently missed. moto 5.2.5's tagging API lists instances, NAT gateways,
interfaces, security groups, subnets, route tables, gateways, peerings, VPCs,
load balancers, target groups and buckets, but not Elastic IPs, network ACLs
or Route53 zones; real AWS lists terminated instances for a while: hence
describe calls first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

#: client(service, region) -> a boto3 client (``Sandbox.client``).
ClientFactory = Callable[[str, str], Any]

#: Kinds the reaper knows, in the order it deletes them: what depends on a thing goes before it.
KINDS = (
    "route53_zone", "elb", "lb", "target_group", "instance", "nat_gateway", "vpc_peering", "elastic_ip",
    "network_interface", "security_group", "subnet", "route_table", "internet_gateway", "network_acl", "vpc",
    "dhcp_options", "volume", "s3_bucket",
)

#: ARN resource types (service, type) the describe calls cover; anything else tagged with a run is ``unknown``.
KNOWN_ARN_TYPES = {
    ("ec2", "instance"), ("ec2", "natgateway"), ("ec2", "elastic-ip"), ("ec2", "network-interface"),
    ("ec2", "security-group"), ("ec2", "subnet"), ("ec2", "route-table"), ("ec2", "internet-gateway"),
    ("ec2", "network-acl"), ("ec2", "vpc-peering-connection"), ("ec2", "vpc"), ("ec2", "dhcp-options"),
    ("ec2", "volume"), ("elasticloadbalancing", "loadbalancer"), ("elasticloadbalancing", "targetgroup"),
    ("s3", ""), ("route53", "hostedzone"),
}

#: Global services are listed once, through the first region.
GLOBAL = "global"


@dataclass(frozen=True)
class Resource:
    """One resource tagged with a run."""

    kind: str
    id: str
    region: str
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    vpc: str = field(default="", compare=False)
    state: str = field(default="", compare=False)

    @property
    def run(self) -> str:
        return self.tags.get("Run", "")

    @property
    def group(self) -> str:
        return self.tags.get("Group", "")

    def __str__(self) -> str:
        where = f" in {self.vpc}" if self.vpc else ""
        return f"{self.kind} {self.id} ({self.region}{where})"


def tags_of(raw: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or ()}


def is_ours(tags: dict[str, str], run_id: str | None = None) -> bool:
    """A resource this tool may delete: it carries both ``Run`` (this run, when named) and ``ExpiresAt``."""
    if not tags.get("Run") or not tags.get("ExpiresAt"):
        return False
    return run_id is None or tags["Run"] == run_id


def parse_time(value: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@dataclass
class Inventory:
    """What a run (or every run of this tool) has in the regions looked at."""

    resources: list[Resource] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a listing that failed: the inventory is then not proof

    def __bool__(self) -> bool:
        return bool(self.resources)

    def __len__(self) -> int:
        return len(self.resources)

    @property
    def complete(self) -> bool:
        return not self.errors

    def runs(self) -> dict[str, list[Resource]]:
        by_run: dict[str, list[Resource]] = {}
        for r in self.resources:
            by_run.setdefault(r.run, []).append(r)
        return by_run

    def lines(self) -> list[str]:
        return [str(r) for r in sorted(self.resources, key=order_key)]


def order_key(r: Resource) -> tuple[int, str, str]:
    return (KINDS.index(r.kind) if r.kind in KINDS else len(KINDS), r.region, r.id)


def take(client: ClientFactory, regions: Iterable[str], run_id: str | None = None, group: str | None = None) -> Inventory:
    """Everything tagged with ``run_id`` (or with any run of this tool when None), in these regions and globally.

    With ``group``, only what carries ``Group=<group>`` too. Only resources
    with both ``Run`` and ``ExpiresAt`` are listed.
    """
    regions = list(dict.fromkeys(r for r in regions if r))
    inv = Inventory()

    def keep(tags: dict[str, str]) -> bool:
        return is_ours(tags, run_id) and (group is None or tags.get("Group") == group)

    def guarded(what: str, fn: Callable[[], Iterator[Resource]]) -> None:
        try:
            for r in fn():
                if keep(r.tags) and r not in inv.resources:
                    inv.resources.append(r)
        except Exception as exc:  # a listing that failed makes the inventory incomplete, never empty by accident
            inv.errors.append(f"{what}: {_reason(exc)}")

    for region in regions:
        ec2 = client("ec2", region)
        flt = [{"Name": "tag:Run", "Values": [run_id]}] if run_id else [{"Name": "tag-key", "Values": ["Run"]}]
        for kind, lister in EC2_LISTERS.items():
            guarded(f"{kind} in {region}", lambda lister=lister, kind=kind: lister(ec2, flt, region))
        guarded(f"classic load balancers in {region}", lambda: _elbs(client("elb", region), region))
        guarded(f"load balancers in {region}", lambda: _elbv2(client("elbv2", region), region))
    if regions:
        first = regions[0]
        guarded("Route53 zones", lambda: _zones(client("route53", first)))
        guarded("S3 buckets", lambda: _buckets(client("s3", first)))
        for region in regions:
            guarded(f"tagging API in {region}", lambda region=region: _unknown(client("resourcegroupstaggingapi", region),
                                                                               region, run_id))
    inv.resources.sort(key=order_key)
    return inv


def _reason(exc: Exception) -> str:
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    if err:
        return f"{err.get('Code')}: {err.get('Message')}"
    return f"{type(exc).__name__}: {exc}"


def _paged(method: Callable, key: str, **kw: Any) -> Iterator[dict[str, Any]]:
    token_name = "NextToken"
    while True:
        page = method(**kw)
        yield from page.get(key, [])
        token = page.get(token_name)
        if not token:
            return
        kw[token_name] = token


# -- EC2 ------------------------------------------------------------------------


def _instances(ec2, flt, region) -> Iterator[Resource]:
    for reservation in _paged(ec2.describe_instances, "Reservations", Filters=flt):
        for i in reservation["Instances"]:
            if i["State"]["Name"] != "terminated":
                yield Resource("instance", i["InstanceId"], region, tags_of(i.get("Tags")), i.get("VpcId", ""), i["State"]["Name"])


def _nat_gateways(ec2, flt, region) -> Iterator[Resource]:
    for n in _paged(ec2.describe_nat_gateways, "NatGateways", Filter=flt):
        if n["State"] not in ("deleted", "failed"):
            yield Resource("nat_gateway", n["NatGatewayId"], region, tags_of(n.get("Tags")), n.get("VpcId", ""), n["State"])


def _addresses(ec2, flt, region) -> Iterator[Resource]:
    for a in ec2.describe_addresses(Filters=flt)["Addresses"]:
        if a.get("AllocationId"):
            yield Resource("elastic_ip", a["AllocationId"], region, tags_of(a.get("Tags")), "", a.get("AssociationId", ""))


def _interfaces(ec2, flt, region) -> Iterator[Resource]:
    for n in _paged(ec2.describe_network_interfaces, "NetworkInterfaces", Filters=flt):
        yield Resource("network_interface", n["NetworkInterfaceId"], region, tags_of(n.get("TagSet")), n.get("VpcId", ""), n["Status"])


def _security_groups(ec2, flt, region) -> Iterator[Resource]:
    for g in _paged(ec2.describe_security_groups, "SecurityGroups", Filters=flt):
        if g.get("GroupName") != "default":
            yield Resource("security_group", g["GroupId"], region, tags_of(g.get("Tags")), g.get("VpcId", ""))


def _subnets(ec2, flt, region) -> Iterator[Resource]:
    for s in _paged(ec2.describe_subnets, "Subnets", Filters=flt):
        yield Resource("subnet", s["SubnetId"], region, tags_of(s.get("Tags")), s["VpcId"])


def _route_tables(ec2, flt, region) -> Iterator[Resource]:
    for t in _paged(ec2.describe_route_tables, "RouteTables", Filters=flt):
        if not any(a.get("Main") for a in t.get("Associations", [])):  # the main table exists as long as its VPC
            yield Resource("route_table", t["RouteTableId"], region, tags_of(t.get("Tags")), t.get("VpcId", ""))


def _internet_gateways(ec2, flt, region) -> Iterator[Resource]:
    for g in _paged(ec2.describe_internet_gateways, "InternetGateways", Filters=flt):
        vpc = next((a["VpcId"] for a in g.get("Attachments", [])), "")
        yield Resource("internet_gateway", g["InternetGatewayId"], region, tags_of(g.get("Tags")), vpc)


def _network_acls(ec2, flt, region) -> Iterator[Resource]:
    for a in _paged(ec2.describe_network_acls, "NetworkAcls", Filters=flt):
        if not a.get("IsDefault"):  # the default ACL exists as long as its VPC
            yield Resource("network_acl", a["NetworkAclId"], region, tags_of(a.get("Tags")), a.get("VpcId", ""))


def _peerings(ec2, flt, region) -> Iterator[Resource]:
    for p in _paged(ec2.describe_vpc_peering_connections, "VpcPeeringConnections", Filters=flt):
        status = p.get("Status", {}).get("Code", "")
        if status not in ("deleted", "rejected", "failed", "expired", "deleting"):
            yield Resource("vpc_peering", p["VpcPeeringConnectionId"], region, tags_of(p.get("Tags")),
                           p.get("RequesterVpcInfo", {}).get("VpcId", ""), status)


def _vpcs(ec2, flt, region) -> Iterator[Resource]:
    for v in _paged(ec2.describe_vpcs, "Vpcs", Filters=flt):
        yield Resource("vpc", v["VpcId"], region, tags_of(v.get("Tags")))


def _dhcp_options(ec2, flt, region) -> Iterator[Resource]:
    for d in _paged(ec2.describe_dhcp_options, "DhcpOptions", Filters=flt):
        yield Resource("dhcp_options", d["DhcpOptionsId"], region, tags_of(d.get("Tags")))


def _volumes(ec2, flt, region) -> Iterator[Resource]:
    for v in _paged(ec2.describe_volumes, "Volumes", Filters=flt):
        if v.get("State") not in ("deleted", "deleting"):
            yield Resource("volume", v["VolumeId"], region, tags_of(v.get("Tags")), "", v.get("State", ""))


EC2_LISTERS = {
    "instances": _instances, "NAT gateways": _nat_gateways, "Elastic IPs": _addresses,
    "network interfaces": _interfaces, "security groups": _security_groups, "subnets": _subnets,
    "route tables": _route_tables, "internet gateways": _internet_gateways, "network ACLs": _network_acls,
    "peering connections": _peerings, "VPCs": _vpcs, "DHCP options": _dhcp_options, "volumes": _volumes,
}


# -- load balancers, Route53, S3 ----------------------------------------------------


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _elbs(elb, region) -> Iterator[Resource]:
    lbs = {lb["LoadBalancerName"]: lb for lb in _paged_marker(elb.describe_load_balancers, "LoadBalancerDescriptions")}
    for names in _chunks(list(lbs), 20):
        for d in elb.describe_tags(LoadBalancerNames=names)["TagDescriptions"]:
            lb = lbs[d["LoadBalancerName"]]
            yield Resource("elb", lb["LoadBalancerName"], region, tags_of(d.get("Tags")), lb.get("VPCId", ""))


def _elbv2(elbv2, region) -> Iterator[Resource]:
    lbs = {lb["LoadBalancerArn"]: ("lb", lb.get("VpcId", "")) for lb in _paged_marker(elbv2.describe_load_balancers, "LoadBalancers")}
    lbs.update({tg["TargetGroupArn"]: ("target_group", tg.get("VpcId", ""))
                for tg in _paged_marker(elbv2.describe_target_groups, "TargetGroups")})
    for arns in _chunks(list(lbs), 20):
        for d in elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
            kind, vpc = lbs[d["ResourceArn"]]
            yield Resource(kind, d["ResourceArn"], region, tags_of(d.get("Tags")), vpc)


def _paged_marker(method: Callable, key: str) -> Iterator[dict[str, Any]]:
    kw: dict[str, Any] = {}
    while True:
        page = method(**kw)
        yield from page.get(key, [])
        marker = page.get("NextMarker")
        if not marker:
            return
        kw["Marker"] = marker


def _zones(r53) -> Iterator[Resource]:
    # One GET per zone (ListTagsForResources is a POST: a recorder could not tell it from a write).
    for z in _paged_marker(r53.list_hosted_zones, "HostedZones"):
        zone = z["Id"].split("/")[-1]
        tag_set = r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone)["ResourceTagSet"]
        yield Resource("route53_zone", zone, GLOBAL, tags_of(tag_set.get("Tags")))


def _buckets(s3) -> Iterator[Resource]:
    from botocore.exceptions import ClientError

    for b in s3.list_buckets().get("Buckets", []):
        try:
            tags = tags_of(s3.get_bucket_tagging(Bucket=b["Name"]).get("TagSet"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchTagSet", "NoSuchBucket"):
                continue
            raise
        yield Resource("s3_bucket", b["Name"], GLOBAL, tags)


def arn_type(arn: str) -> tuple[str, str]:
    """(service, resource type) of an ARN: ``arn:aws:ec2:r:a:instance/i-1`` -> ("ec2", "instance")."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return ("", "")
    service, rest = parts[2], parts[5]
    if service == "s3":
        return ("s3", "")
    return (service, rest.split("/", 1)[0] if "/" in rest else rest.split(":", 1)[0])


def _unknown(tagging, region: str, run_id: str | None) -> Iterator[Resource]:
    """Anything tagged with the run whose type no describe call above covers."""
    flt = [{"Key": "Run", "Values": [run_id]}] if run_id else [{"Key": "Run"}]
    kw: dict[str, Any] = {"TagFilters": flt}
    while True:
        page = tagging.get_resources(**kw)
        for m in page.get("ResourceTagMappingList", []):
            service, rtype = arn_type(m["ResourceARN"])
            if (service, rtype) in KNOWN_ARN_TYPES or (service, "") in KNOWN_ARN_TYPES and service == "s3":
                continue
            if service == "elasticloadbalancing" and rtype in ("listener", "listener-rule"):
                continue  # deleted with their load balancer
            yield Resource(f"unknown ({service} {rtype})", m["ResourceARN"], region, tags_of(m.get("Tags")))
        token = page.get("PaginationToken")
        if not token:
            return
        kw["PaginationToken"] = token
