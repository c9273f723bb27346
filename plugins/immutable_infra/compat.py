"""Compatibility fixes for moto, applied in-process before the embedded server starts.

Each fix is small, documented and covered by one test in tests/test_compat.py.
They patch moto 5.2.5's in-process models/responses (the ThreadedMotoServer
runs in this process, so patching the classes is enough). Each fix makes moto
behave like AWS where the difference breaks a seed group's apply, or makes a
clean ``apply`` + refresh show changes. ``apply()`` is idempotent; each fix
also marks what it patched so it is never wrapped twice.
"""

from __future__ import annotations

import functools
from typing import Any

_applied = False

#: Names of the fixes, in the order apply() runs them (for reports and tests).
FIXES = (
    "instance_security_groups_from_primary_nic",
    "route53_zone_with_vpc_is_private",
    "route53_recreate_deleted_record",
    "nat_gateway_delete_releases_address",
    "primary_interface_deleted_with_instance",
    "instance_and_primary_interface_share_groups",
    "dhcp_options_tags_at_creation",
    "vpc_endpoint_route_tables_get_routes",
)


def _mark(func: Any) -> Any:
    func.__immutable_infra_compat__ = True
    return func


def _patched(func: Any) -> bool:
    return getattr(func, "__immutable_infra_compat__", False)


def fix_instance_security_groups_from_primary_nic() -> None:
    """Instance security groups given on the primary network interface.

    moto: ``RunInstances`` with ``NetworkInterfaces.1.SecurityGroupId.N``
    (DeviceIndex 0) and no instance-level ``SecurityGroupIds`` gives the ENI
    those groups but leaves the instance's own group list empty, so
    ``DescribeInstances`` returns ``SecurityGroups: []``.
    AWS: the groups of the primary interface *are* the instance's groups;
    ``DescribeInstances`` lists them.
    Why: hashicorp/aws 3.39.0 launches the seed groups' instances (in a
    subnet, with ``vpc_security_group_ids``) with the groups on the primary
    interface. It then reads back no groups, so every plan after a clean
    apply shows an in-place ``update`` of ``vpc_security_group_ids`` on every
    instance (measured: all 5 instances of ops-sg), and role checks see
    instances without their security groups.
    Fix: after moto builds the instance, when it has no groups, take them from
    the primary interface specification.
    """
    from moto.ec2.models.instances import Instance

    original = Instance.__init__
    if _patched(original):
        return

    @functools.wraps(original)
    def __init__(self: Any, ec2_backend: Any, image_id: Any, user_data: Any,
                 security_groups: Any, **kwargs: Any) -> None:
        original(self, ec2_backend, image_id, user_data, security_groups, **kwargs)
        if self.security_groups:
            return
        for nic in kwargs.get("nics") or []:
            if str(nic.get("DeviceIndex", "")) == "0" and nic.get("Groups"):
                groups = [ec2_backend.get_security_group_from_id(g) for g in nic["Groups"]]
                self.security_groups = [g for g in groups if g is not None]
                break

    Instance.__init__ = _mark(__init__)


def fix_route53_zone_with_vpc_is_private() -> None:
    """A hosted zone created with a VPC is a private zone.

    moto: ``CreateHostedZone`` reads the ``VPC`` element only when
    ``HostedZoneConfig.PrivateZone`` is true; without it the zone is public
    and the VPC is dropped.
    AWS: "If you specify a VPC, the hosted zone is private" (the VPC element
    alone makes the zone private; PrivateZone is implied).
    Why: hashicorp/aws 3.x ``aws_route53_zone`` with a ``vpc`` block sends the
    VPC but no PrivateZone flag. Against moto the zone comes back public with
    no VPC, so every plan after a clean apply shows an ``update`` of the zone
    (re-associating the ``vpc``), and the group's private DNS is not private.
    Fix: in the request handler, a request carrying ``VPC.VPCId`` sets
    PrivateZone=true before moto reads it.
    """
    from moto.route53.responses import Route53

    original = Route53.create_hosted_zone
    if _patched(original):
        return

    @functools.wraps(original)
    def create_hosted_zone(self: Any) -> Any:
        if self._get_param("VPC.VPCId"):
            read_bool = self._get_bool_param

            def _get_bool_param(name: str, if_none: Any = None) -> Any:
                if name == "HostedZoneConfig.PrivateZone":
                    return True
                return read_bool(name, if_none)

            # shadows the method on this handler for this call only
            self._get_bool_param = _get_bool_param
            try:
                return original(self)
            finally:
                del self._get_bool_param
        return original(self)

    Route53.create_hosted_zone = _mark(create_hosted_zone)


def fix_route53_recreate_deleted_record() -> None:
    """Re-creating a deleted record set is allowed; creating an existing one is not.

    moto: a ``CREATE`` change identical to one already in the zone's change
    journal is checked with a *range* listing (every record set whose name
    sorts at or after the new one), so after the record was deleted the
    CREATE still fails with "already exists" whenever any other record sorts
    after it. Conversely, an existing record created with different values
    is not rejected.
    AWS: CREATE fails with InvalidChangeBatch "... but it already exists"
    exactly when a record set with the same name, type (and set identifier)
    exists now; history does not matter.
    Why: destroy + rebuild of a group (and the chaos "record deleted" fault)
    re-creates the same ``aws_route53_record``; moto refuses it.
    Fix: check exact existence before moto runs the change batch, and make the
    journal membership test (used only by that faulty check) answer False.
    """
    from moto.route53 import models as r53

    original = r53.Route53Backend.change_resource_record_sets
    if _patched(original):
        return

    class Journal(r53.ChangeList):
        def __contains__(self, item: Any) -> bool:  # the faulty check only
            return False

    @functools.wraps(original)
    def change_resource_record_sets(self: Any, zoneid: str, change_list: list[dict[str, Any]]) -> None:
        zone = self.get_hosted_zone(zoneid)
        for value in change_list:
            if value.get("Action") != "CREATE":
                continue
            rrset = value["ResourceRecordSet"]
            name = rrset["Name"].rstrip(".") + "."
            for existing in zone.rrsets:
                if (
                    existing.name.rstrip(".").lower() + "." == name.lower()
                    and existing.type == rrset.get("Type")
                    and existing.set_identifier == rrset.get("SetIdentifier")
                ):
                    raise r53.ResourceRecordAlreadyExists(name=name, _type=rrset.get("Type"))
        if type(zone.rr_changes) is not Journal:
            zone.rr_changes.__class__ = Journal
        return original(self, zoneid, change_list)

    r53.Route53Backend.change_resource_record_sets = _mark(change_resource_record_sets)


def fix_nat_gateway_delete_releases_address() -> None:
    """Deleting a NAT gateway releases its Elastic IP and removes its network interface.

    moto: ``DeleteNatGateway`` only marks the gateway ``deleted``; its EIP stays
    associated with the gateway's network interface, so a new NAT gateway on the
    same allocation fails with ``Resource.AlreadyAssociated``, and the
    interface stays in the subnet.
    AWS: deleting a NAT gateway disassociates its Elastic IP (the allocation
    survives, free for a new gateway) and deletes the interface it managed.
    Why: a NAT gateway deleted out of band (the chaos fault ``nat_deleted``) is
    repaired by an apply that creates a new gateway on the group's own EIP;
    without this fix that repair always fails, and the old interface is then
    reported as an unmanaged resource of the group.
    Fix: after moto marks the gateway deleted, clear the association of the
    addresses on its interface and delete the interface.
    """
    from moto.ec2.models.nat_gateways import NatGatewayBackend

    original = NatGatewayBackend.delete_nat_gateway
    if _patched(original):
        return

    @functools.wraps(original)
    def delete_nat_gateway(self: Any, nat_gateway_id: str) -> Any:
        nat_gw = original(self, nat_gateway_id)
        eni = getattr(nat_gw, "_eni", None)
        for eip in list(getattr(self, "addresses", [])):
            if eni is not None and eip.eni is not None and eip.eni.id == eni.id:
                eip.eni = None
                eip.instance = None
                eip.association_id = None
        if eni is not None and eni.id in getattr(self, "enis", {}):
            self.enis.pop(eni.id, None)
        return nat_gw

    NatGatewayBackend.delete_nat_gateway = _mark(delete_nat_gateway)


def fix_primary_interface_deleted_with_instance() -> None:
    """The network interface a launch creates is deleted when the instance is terminated.

    moto: ``RunInstances`` creates the primary interface with
    ``DeleteOnTermination`` false unless the request says true, so every
    terminated instance leaves an ``in-use`` interface behind in its subnet.
    AWS: an interface created by the launch defaults to
    ``DeleteOnTermination=true`` and goes away with the instance.
    Why: after a terminated or replaced instance (the chaos faults
    ``instance_terminated``, ``stale_ami_replacement``, a rogue instance
    removed again) the leftover interface is reported as an unmanaged resource
    of the group, and a subnet with it cannot be destroyed.
    Fix: interfaces created by the launch (not attached by id) delete on
    termination unless the request said otherwise.
    """
    from moto.ec2.models.instances import Instance

    original = Instance.prep_nics
    if _patched(original):
        return

    @functools.wraps(original)
    def prep_nics(self: Any, nic_spec: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        attached = {n.get("NetworkInterfaceId") for n in nic_spec if n.get("NetworkInterfaceId")}
        said = {int(n.get("DeviceIndex", 0)): n.get("DeleteOnTermination") for n in nic_spec}
        original(self, nic_spec, *args, **kwargs)
        for index, nic in self.nics.items():
            if nic.id not in attached and said.get(index) is not False and str(said.get(index)).lower() != "false":
                nic.delete_on_termination = True

    Instance.prep_nics = _mark(prep_nics)


def fix_instance_and_primary_interface_share_groups() -> None:
    """An instance's security groups and its primary interface's are one set.

    moto: ``ModifyInstanceAttribute`` (groups) changes only the instance's list
    and ``ModifyNetworkInterfaceAttribute`` only the interface's, and the
    interface reports the union of both; once both were used, no call can
    remove a group again.
    AWS: they are the same set; changing either changes both.
    Why: a security group attached out of band (the chaos fault
    ``extra_sg_attached``) is repaired by an apply that sets the groups on the
    primary interface; moto kept reporting the extra group, so the group was
    never idempotent again and a rebuild compared against a wrong original.
    Fix: each call sets the groups of both.
    """
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    from moto.ec2.models.instances import InstanceBackend

    original_instance = InstanceBackend.modify_instance_security_groups
    original_eni = NetworkInterfaceBackend.modify_network_interface_attribute
    if _patched(original_instance):
        return

    @functools.wraps(original_instance)
    def modify_instance_security_groups(self: Any, instance_id: str, new_group_id_list: list[str]) -> Any:
        instance = original_instance(self, instance_id, new_group_id_list)
        primary = getattr(instance, "nics", {}).get(0)
        if primary is not None:
            primary._group_set = list(instance.security_groups)
        return instance

    @functools.wraps(original_eni)
    def modify_network_interface_attribute(self: Any, eni_id: str, group_ids: list[str], *args: Any, **kwargs: Any) -> None:
        original_eni(self, eni_id, group_ids, *args, **kwargs)
        eni = self.get_network_interface(eni_id)
        instance = getattr(eni, "instance", None)
        if group_ids and instance is not None and getattr(instance, "nics", {}).get(0) is eni:
            instance.security_groups = list(eni._group_set)

    InstanceBackend.modify_instance_security_groups = _mark(modify_instance_security_groups)
    NetworkInterfaceBackend.modify_network_interface_attribute = _mark(modify_network_interface_attribute)


def fix_dhcp_options_tags_at_creation() -> None:
    """Tags given when a DHCP options set is created are kept.

    moto: ``CreateDhcpOptions`` ignores ``TagSpecification`` (only a later
    ``CreateTags`` tags the set), so the set reads back with no tags.
    AWS: the tags of a ``dhcp-options`` tag specification are on the new set.
    Why: hashicorp/aws 3.39.0 tags ``aws_vpc_dhcp_options`` at creation. Read
    back without them, every plan after a clean apply shows an ``update`` of
    its ``tags`` (measured on tests/groups/realworld, the community VPC
    module's DHCP options), and a rebuild compares a tagless set.
    Fix: after moto creates the set, add the tags of the request's
    ``dhcp-options`` tag specification.
    """
    from moto.ec2.responses.dhcp_options import DHCPOptions

    original = DHCPOptions.create_dhcp_options
    if _patched(original):
        return

    @functools.wraps(original)
    def create_dhcp_options(self: Any) -> Any:
        tags = self._parse_tag_specification().get("dhcp-options", {})
        result = original(self)
        options = (getattr(result, "result", None) or {}).get("DhcpOptions")
        if tags and options is not None:
            self.ec2_backend.create_tags([options.id], tags)
        return result

    DHCPOptions.create_dhcp_options = _mark(create_dhcp_options)


def fix_vpc_endpoint_route_tables_get_routes() -> None:
    """Adding a route table to a gateway VPC endpoint adds the endpoint's route to it (removing removes it).

    moto: ``CreateVpcEndpoint`` with ``RouteTableId.N`` adds a route (the
    service's prefix list -> the endpoint) to each table, but
    ``ModifyVpcEndpoint`` with ``AddRouteTableId.N`` / ``RemoveRouteTableId.N``
    only updates the endpoint's list: no route appears or goes.
    AWS: the route is added or removed with the association, whichever call
    makes it.
    Why: ``aws_vpc_endpoint_route_table_association`` (how the community VPC
    module wires its S3/DynamoDB endpoints, tests/groups/realworld) calls
    ModifyVpcEndpoint. Without the route the sandbox differs from AWS where
    it matters to the checks: the route tables the unmanaged check and the
    reachability analyzer read lack the endpoint's routes, so a check that
    mishandles them passes here and fails against AWS.
    Fix: after moto updates the list, create or delete the endpoint's
    prefix-list route in the tables added or removed.
    """
    from moto.ec2.models.vpcs import VPCBackend

    original = VPCBackend.modify_vpc_endpoint
    if _patched(original):
        return

    @functools.wraps(original)
    def modify_vpc_endpoint(self: Any, vpc_id: str, *args: Any, **kwargs: Any) -> Any:
        endpoint = self.describe_vpc_endpoints(vpc_end_point_ids=[vpc_id])[0]
        before = list(endpoint.route_table_ids or [])
        result = original(self, vpc_id, *args, **kwargs)
        prefix = getattr(endpoint, "destination_prefix_list_id", None)
        if prefix and str(endpoint.vpc_endpoint_type).lower() == "gateway":
            after = list(endpoint.route_table_ids or [])
            for table in [t for t in after if t not in before]:
                self.create_route(table, None, gateway_id=endpoint.id, destination_prefix_list_id=prefix)
            for table in [t for t in before if t not in after]:
                self.delete_route(table, None, destination_prefix_list_id=prefix)
        return result

    VPCBackend.modify_vpc_endpoint = _mark(modify_vpc_endpoint)


def apply() -> None:
    """Apply every fix once (idempotent)."""
    global _applied
    if _applied:
        return
    fix_instance_security_groups_from_primary_nic()
    fix_route53_zone_with_vpc_is_private()
    fix_route53_recreate_deleted_record()
    fix_nat_gateway_delete_releases_address()
    fix_primary_interface_deleted_with_instance()
    fix_instance_and_primary_interface_share_groups()
    fix_dhcp_options_tags_at_creation()
    fix_vpc_endpoint_route_tables_get_routes()
    _applied = True
