"""Making and removing what an instance needs, all tagged tenfold=true and tenfold:name=NAME: the key pair and the
security group tenfold-NAME, the instance itself (spot or on-demand, the Deep Learning AMI, gp3, IMDSv2 only),
and, on a failed launch, undoing exactly what this launch made. AWS's refusals become one line of advice."""
from __future__ import annotations

import ipaddress
import os
import urllib.request
from pathlib import Path

from tenfold import envvars
from tenfold.cloud import aws, cost, jobs
from tenfold.cloud.catalog import QUOTA_CODES, catalog
from tenfold.cloud.guardrails import Guardrails, launch_time
from tenfold.cloud.ssh_config import forget_host_key, host_entry, remove_host
from tenfold.errors import ConfigError
from tenfold.fileio import atomic_open, tenfold_home
from tenfold.log import note, warn

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CHECKIP_URL = "https://checkip.amazonaws.com"
SG_WAIT = 300     # seconds: how long `down` retries deleting a security group AWS still holds after a termination


def resource_name(name: str) -> str:
    return f"tenfold-{name}"


def tags(name: str) -> list[dict]:
    return [{"Key": "tenfold", "Value": "true"}, {"Key": aws.NAME_TAG, "Value": name},
            {"Key": "Name", "Value": resource_name(name)}]


def key_path(name: str) -> Path:
    return tenfold_home() / "keys" / f"{resource_name(name)}.pem"


def caller_cidr(cidr: str | None) -> str:
    """The CIDR allowed to reach ssh: the one given, else this machine's public address as a /32."""
    if cidr is None:
        url = os.environ.get(envvars.CHECKIP_URL) or CHECKIP_URL
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                cidr = r.read().decode().strip() + "/32"
        except OSError as e:
            raise aws.CloudError(f"cannot find this machine's public address at {url} ({e}); "
                                 "pass --cidr A.B.C.D/32")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"--cidr: '{cidr}' is not an address range like 203.0.113.7/32")
    if net.prefixlen == 0:
        warn("ssh will be open to the whole internet (0.0.0.0/0), as asked")
    return str(net)


def ensure_key_pair(s, name: str, region: str) -> str:
    """The key pair tenfold-NAME, its private key saved 0600 under $TENFOLD_HOME/keys."""
    ec2, key_name, path = aws.client(s, "ec2", region), resource_name(name), key_path(name)
    with aws.aws_errors(region):
        found = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_name]}])["KeyPairs"]
        if found and path.exists():
            return key_name
        if found:  # the private half is lost: replace the pair (no instance of ours uses it, see up())
            ec2.delete_key_pair(KeyName=key_name)
        material = ec2.create_key_pair(KeyName=key_name, KeyType="ed25519", TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": tags(name)}])["KeyMaterial"]
    with atomic_open(path, "w", perms=0o600) as f:
        f.write(material)
    return key_name


def ensure_security_group(s, name: str, region: str, cidr: str) -> str:
    """Security group tenfold-NAME in the default VPC: ssh (22) from `cidr` only; nothing else, never 8888."""
    ec2, group_name = aws.client(s, "ec2", region), resource_name(name)
    with aws.aws_errors(region):
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [group_name]}])["SecurityGroups"]
        if found:
            group = found[0]
        else:
            vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
            if not vpcs:
                raise aws.CloudError(f"region {region} has no default VPC: create one with "
                                     "`aws ec2 create-default-vpc`")
            gid = ec2.create_security_group(GroupName=group_name, VpcId=vpcs[0]["VpcId"],
                                            Description="tenfold: ssh from the owner's address only",
                                            TagSpecifications=[{"ResourceType": "security-group",
                                                                "Tags": tags(name)}])["GroupId"]
            group = {"GroupId": gid, "IpPermissions": []}
        allowed = {r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 22 for r in p["IpRanges"]}
        if cidr not in allowed:
            ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[ssh_rule([cidr])])
        if allowed - {cidr}:  # an address the caller had before (another network): no longer let in
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"],
                                              IpPermissions=[ssh_rule(sorted(allowed - {cidr}))])
    return group["GroupId"]


def ssh_rule(cidrs: list[str]) -> dict:
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
            "IpRanges": [{"CidrIp": c, "Description": "tenfold ssh"} for c in cidrs]}


def dlami(s, region: str, ami: str | None) -> str:
    if ami:
        return ami
    with aws.aws_errors(region):
        return aws.client(s, "ssm", region).get_parameter(Name=DLAMI_PARAMETER)["Parameter"]["Value"]


def create(s, name: str, region: str, itype: str, spot: bool, disk: int, cidr: str | None,
           max_price: float | None, ami: str | None, rails: Guardrails, profile: str | None) -> dict:
    """Launch NAME, with its key pair and security group. On a failure, nothing is left behind when AWS lets
    tenfold remove it, and the error says what is left when it does not; Ctrl-C says what exists."""
    allowed = caller_cidr(cidr)
    launched: list[dict] = []
    try:
        key = ensure_key_pair(s, name, region)
        group = ensure_security_group(s, name, region, allowed)
        instance = launch(s, name, region, itype, spot, disk, dlami(s, region, ami), key, group, max_price,
                          jobs.boot_script(rails.settings(spot, usd_per_h=ceiling_price(itype, disk))), rails,
                          launched)
        keep_first(s, name, region, instance)
    except KeyboardInterrupt:
        what = (f"tenfold-{name} ({launched[0]['InstanceId']}) is launched and bills" if launched else
                f"tenfold-{name} may have been launched")
        note(f"{what}: `tenfold cloud status` shows it, `tenfold cloud up {name}` finishes setting it "
             f"up, `tenfold cloud down {name}` removes it")
        raise
    except aws.CloudError as e:
        try:
            abandon(s, name, region, launched)
        except aws.CloudError as cleanup:
            left = f"tenfold-{name} ({launched[0]['InstanceId']}, launched)" if launched else f"tenfold-{name}"
            raise aws.CloudError(f"{e}; and {left} could not be removed ({cleanup}): once that is fixed, "
                                 f"`tenfold cloud down {name}`")
        raise
    return instance


def ceiling_price(itype: str, disk: int) -> float:
    """$/h at most before the launch price is known: on-demand (above any spot price), gp3, IPv4. The boot
    script's --max-cost counts with it until tenfold connects and gives the agent the launch price."""
    return catalog()[itype].on_demand_usd_per_h + disk * cost.GP3_USD_PER_GB_MONTH / cost.HOURS_PER_MONTH + \
        cost.IPV4_USD_PER_H


def launch(s, name: str, region: str, itype: str, spot: bool, disk: int, image: str, key: str, group: str,
           max_price: float | None, user_data: str = "", rails: Guardrails | None = None,
           launched: list | None = None) -> dict:
    """RunInstances, noted in the cost ledger the moment AWS answers (and appended to `launched`), then wait
    until the instance runs."""
    ec2 = aws.client(s, "ec2", region)
    with aws.aws_errors(region):
        root = ec2.describe_images(ImageIds=[image])["Images"][0].get("RootDeviceName", "/dev/sda1")
        args = dict(ImageId=image, InstanceType=itype, MinCount=1, MaxCount=1, KeyName=key, SecurityGroupIds=[group],
                    MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},  # IMDSv2 only
                    BlockDeviceMappings=[{"DeviceName": root, "Ebs": {"VolumeSize": disk, "VolumeType": "gp3",
                                                                      "DeleteOnTermination": True}}],
                    TagSpecifications=[{"ResourceType": "instance", "Tags": tags(name) + (rails or Guardrails()).tags()},
                                       {"ResourceType": "volume", "Tags": tags(name)}],
                    UserData=user_data)  # the agent and its guardrails from the first boot
        if spot:  # persistent + stop: the only spot kind that can be stopped and started again
            options = {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
            if max_price is not None:
                options["MaxPrice"] = f"{max_price:.4f}"
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
            args["TagSpecifications"].append({"ResourceType": "spot-instances-request", "Tags": tags(name)})
    try:
        instance = aws.run_instance(s, args, region)
    except aws.LaunchError as e:
        raise aws.CloudError(launch_advice(e, itype, spot, max_price, region))
    cost.record("launch", instance, name, region, disk)
    if launched is not None:
        launched.append(instance)
    with aws.aws_errors(region):
        ec2.get_waiter("instance_running").wait(InstanceIds=[instance["InstanceId"]],
                                                WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        return ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]


def launch_advice(e: "aws.LaunchError", itype: str, spot: bool, max_price: float | None, region: str) -> str:
    """One line for each way a launch fails, saying what to do."""
    c = catalog()[itype]
    market, family = ("spot" if spot else "on-demand"), aws.quota_family(itype)
    if e.code in ("VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"):
        code = QUOTA_CODES[(family, spot)]
        return (f"the account's {market} vCPU quota for {family.upper()} instances ({code}) in {region} does not "
                f"cover a {itype} ({c.vcpus} vCPUs): see `tenfold cloud quota`, ask for more with "
                f"`tenfold cloud quota --request {max(c.vcpus, 8)}{' --spot' if spot else ''}"
                f"{' --family p' if family == 'p' else ''}`")
    if e.code == "InsufficientInstanceCapacity":
        others = [t for t in ("g6.xlarge", "g5.xlarge", "g4dn.xlarge") if t != itype][:2]
        return (f"AWS has no {market} capacity for {itype} in any zone of {region} right now: try "
                f"--type {' or --type '.join(others)}, another --region, {'--on-demand, ' if spot else ''}or later")
    if e.code == "SpotMaxPriceTooLow":
        return (f"--max-price {max_price} is below the current spot price of {itype}: raise it, or leave it out "
                "(AWS advises no maximum)")
    if e.code in ("Unsupported", "InvalidParameterValue", "InvalidInstanceType"):
        return f"{itype} cannot be launched in {region} ({e}): see `tenfold cloud gpus --regions`"
    return f"AWS refused the launch ({e.code}: {e})"


def abandon(s, name: str, region: str, launched: list[dict]) -> None:
    """After a failed `up`: terminate the instance this `up` launched, if any (never another's), then, when no
    instance of NAME is left, the key pair and security group too: nothing left behind."""
    ec2 = aws.client(s, "ec2", region)
    with aws.aws_errors(region):
        requests = [i["SpotInstanceRequestId"] for i in launched if i.get("SpotInstanceRequestId")]
        if requests:
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=requests)
        ids = [i["InstanceId"] for i in launched]
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
            for inst in launched:
                cost.record("terminate", inst, name, region)
    if not aws.find_instances(s, name, region):
        remove(s, name, region)


def keep_first(s, name: str, region: str, instance: dict) -> None:
    """Two `up` of one NAME from different machines (or $TENFOLD_HOMEs) at once both launch: each keeps the
    first launched (ties by ID), so both agree and one instance is left; the other launch is undone (CloudError)."""
    same = aws.find_instances(s, name, region)
    first = min(same or [instance], key=lambda i: (launch_time(i), i["InstanceId"]))
    if first["InstanceId"] != instance["InstanceId"]:
        raise aws.CloudError(f"another tenfold (another machine, or another TENFOLD_HOME) launched tenfold-{name} at "
                             f"the same moment: its instance {first['InstanceId']} is kept and this launch undone; "
                             "ssh to it needs the key of the machine that launched it")


def remove(s, name: str, region: str) -> dict:
    """`down`, the caller holding the name's lock."""
    ec2 = aws.client(s, "ec2", region)
    gone = {"instances": [], "spot_requests": [], "security_group": None, "key_pair": None}
    with aws.aws_errors(region):
        instances = aws.find_instances(s, name, region)
        for inst in instances:
            cost.note_launch(s, inst, region)  # launched without tenfold seeing it: its cost from launch to now
        requests = [i["SpotInstanceRequestId"] for i in instances if i.get("SpotInstanceRequestId")]
        if requests:  # first: a persistent request would otherwise launch a replacement
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=requests)
            gone["spot_requests"] = requests
        ids = [i["InstanceId"] for i in instances]
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
            gone["instances"] = ids
            for inst in instances:
                cost.record("terminate", inst, name, region)
        groups = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [resource_name(name)]}])["SecurityGroups"]
        keys = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [resource_name(name)]}])["KeyPairs"]
        if keys:
            ec2.delete_key_pair(KeyName=resource_name(name))
            gone["key_pair"] = resource_name(name)
        key_path(name).unlink(missing_ok=True)
        forget_host_key(*[i["InstanceId"] for i in instances], *[i.get("PublicIpAddress") for i in instances],
                        host_entry(resource_name(name)).get("hostname", ""))
        remove_host(resource_name(name))
        for g in groups:  # last: AWS may hold it for a minute after the termination (DependencyViolation)
            if aws.delete_security_group(s, g["GroupId"], region, SG_WAIT):
                gone["security_group"] = g["GroupId"]
            else:
                gone["security_group_left"] = g["GroupId"]
    return gone
