"""`tenfold cloud up | status | stop | start | down`: GPU instances found by their tags, so a rerun is safe.

Everything tenfold creates for instance NAME carries the tags tenfold=true and tenfold:name=NAME: the instance,
its root volume, its spot request, a key pair and a security group both called tenfold-NAME. `down` removes all
of it, so nothing is left that bills.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tenfold.cloud import aws, cost, jobs
from tenfold.cloud.catalog import QUOTA_CODES, load_catalog
from tenfold.cloud.remote import wait_for_ssh
from tenfold.cloud.ssh_config import forget_host_key, host_entry, remove_host, write_host
from tenfold.errors import ConfigError
from tenfold.fileio import atomic_open, tenfold_home

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CHECKIP_URL = "https://checkip.amazonaws.com"
SSH_WAIT = 600   # seconds: a Deep Learning AMI takes a few minutes to boot
RESTART_POLL = 2  # seconds between looks at an interrupted instance that AWS is to restart
IDLE_STOP = 3600  # seconds: the default idle stop, so a forgotten instance stops billing compute after an hour
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
        url = os.environ.get("TENFOLD_CHECKIP_URL") or CHECKIP_URL
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                cidr = r.read().decode().strip() + "/32"
        except OSError as e:
            raise aws.CloudError(f"cannot find this machine's public address at {url} ({e}); "
                                 "pass --cidr A.B.C.D/32") from None
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"--cidr: '{cidr}' is not an address range like 203.0.113.7/32") from None
    if net.prefixlen == 0:
        print("warning: ssh will be open to the whole internet (0.0.0.0/0), as asked", file=sys.stderr)
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
        raise aws.CloudError(launch_advice(e, itype, spot, max_price, region)) from None
    cost.record("launch", instance, name, region, disk)
    if launched is not None:
        launched.append(instance)
    with aws.aws_errors(region):
        ec2.get_waiter("instance_running").wait(InstanceIds=[instance["InstanceId"]],
                                                WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        return ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]


def launch_advice(e: "aws.LaunchError", itype: str, spot: bool, max_price: float | None, region: str) -> str:
    """One line for each way a launch fails, saying what to do."""
    c = {c.type: c for c in load_catalog()}[itype]
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


def hourly_cost(s, instance: dict, region: str) -> dict:
    """$/h now: the compute price while it runs (spot: the zone's latest; on-demand: the catalogue's), gp3
    storage, the public IPv4 address."""
    itype, zone = instance["InstanceType"], instance["Placement"]["AvailabilityZone"]
    catalog = {c.type: c for c in load_catalog()}
    if instance.get("InstanceLifecycle") == "spot":
        zones = {r["AvailabilityZone"]: float(r["SpotPrice"]) for r in aws.spot_history(s, [itype], region=region)}
        compute = zones.get(zone)
    else:
        compute = catalog[itype].on_demand_usd_per_h if itype in catalog else None
    if instance["State"]["Name"] not in ("pending", "running"):
        compute = 0.0  # a stopped instance bills its disk only
    disk = sum(v.get("Size", 0) for v in volumes(s, instance, region))
    return {"compute": compute, "storage": disk * cost.GP3_USD_PER_GB_MONTH / cost.HOURS_PER_MONTH,
            "ipv4": cost.IPV4_USD_PER_H if instance.get("PublicIpAddress") else 0.0}


def volumes(s, instance: dict, region: str) -> list[dict]:
    ids = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
    if not ids:
        return []
    with aws.aws_errors(region):
        return aws.client(s, "ec2", region).describe_volumes(VolumeIds=ids)["Volumes"]


GUARD_TAGS = {"max_hours": "tenfold:max-hours", "idle_stop": "tenfold:idle-stop"}  # the guardrails, on AWS


@dataclass
class Guardrails:
    """What the agent on the instance enforces, with the laptop closed. They live on the instance as tags (set
    at launch; changed only by `up --change-guardrails`), so every later `up`, `start` and resume applies the
    same ones, and --max-hours counts from the instance's start, not from whenever tenfold last connected."""
    max_hours: float | None = None       # hours since the instance started, then stop; None: no limit
    idle_stop: float | None = IDLE_STOP  # seconds with no job, ssh session or notebook in use, then stop; None: off

    @classmethod
    def of(cls, instance: dict) -> "Guardrails":
        """The guardrails an instance was given (tags); an instance without them gets the defaults."""
        found = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        values = {}
        for field, key in GUARD_TAGS.items():
            if key in found:
                values[field] = None if found[key] in ("none", "off") else float(found[key])
        return cls(**values)

    def merged(self, asked: dict) -> "Guardrails":
        """These guardrails with the flags given on top (0: off)."""
        return Guardrails(**{f: (v or None) if f in asked else getattr(self, f)
                             for f, v in {**vars(self), **asked}.items()})

    def tags(self) -> list[dict]:
        return [{"Key": GUARD_TAGS["max_hours"], "Value": "none" if self.max_hours is None else f"{self.max_hours:g}"},
                {"Key": GUARD_TAGS["idle_stop"], "Value": "off" if self.idle_stop is None else f"{self.idle_stop:g}"}]

    def describe(self) -> str:
        return (f"--max-hours {'off' if self.max_hours is None else f'{self.max_hours:g}'}, "
                f"--idle-stop {'off' if self.idle_stop is None else duration_text(self.idle_stop)}")

    def settings(self, spot: bool, running_since: float | None = None) -> dict:
        """The agent's agent.json; `running_since`: when the instance started (epoch seconds), the start of
        --max-hours."""
        return {"max_hours": self.max_hours, "idle_stop": self.idle_stop, "spot": spot, "auto_resume": True,
                "boot_hook": True, "running_since": running_since,
                "stop": ["sudo", "-n", "shutdown", "-h", "now"]}  # an OS shutdown stops it


def duration_text(seconds: float) -> str:
    """3600 -> '1h', 90 -> '90s', 1800 -> '30m': as --idle-stop takes it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@contextlib.contextmanager
def name_lock(name: str, region: str):
    """One `up` (or `down`) of NAME at a time from this machine: two at once would launch two instances."""
    import fcntl
    path = tenfold_home() / "cloud" / "locks" / f"{region}-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"tenfold: another tenfold command is launching or removing tenfold-{name}; waiting for it",
                  file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def check_request(name: str, itype: str | None, disk: int | None, guardrails: dict) -> None:
    if guardrails.get("max_hours") is not None and guardrails["max_hours"] < 0:
        raise ConfigError(f"--max-hours must be above 0 (or off), got {guardrails['max_hours']}")
    if disk is not None and not 30 <= disk <= 16384:
        raise ConfigError(f"--disk must be between 30 and 16384 GB, got {disk}")
    catalog = {c.type: c for c in load_catalog()}
    if itype is not None and itype not in catalog:
        raise ConfigError(f"unknown GPU type '{itype}'; see `tenfold cloud gpus` ({', '.join(catalog)})")


def up(name: str = "default", itype: str | None = None, spot: bool | None = None, disk: int | None = None,
       region: str | None = None, profile: str | None = None, cidr: str | None = None,
       max_price: float | None = None, ami: str | None = None, wait: float = SSH_WAIT,
       guardrails: dict | None = None, change_guardrails: bool = False) -> dict:
    """Launch (or find, or start) instance NAME, wait up to `wait` seconds (0: not at all) for ssh, and set up
    the agent that enforces the guardrails on it.

    `itype`, `spot`, `disk`, `max_price`, `ami`: None when not asked for (a new instance then gets g4dn.xlarge,
    spot, 100 GB); for an instance that exists, anything asked that differs from it is refused (ConfigError).
    `guardrails`: {"max_hours": hours, "idle_stop": seconds} as asked (0: off); an existing instance keeps its
    own unless `change_guardrails`."""
    asked = {k: v for k, v in (guardrails or {}).items() if v is not None}
    check_request(name, itype, disk, asked)
    s = aws.session(region, profile)
    region = aws.region_of(s)
    with name_lock(name, region):
        found = aws.find_instances(s, name, region)
        changed = False
        if found:
            instance, rails = existing(s, name, region, found, itype, spot, disk, ami, max_price, asked,
                                       change_guardrails)
            changed = rails != Guardrails.of(instance)
            ensure_security_group(s, name, region, caller_cidr(cidr))  # this caller's address, if it changed
            if instance["State"]["Name"] in ("stopped", "stopping"):
                instance = start(name, region, profile, wait=0)
            action = "found"
        else:
            rails = Guardrails().merged(asked)
            instance = create(s, name, region, itype or "g4dn.xlarge", True if spot is None else spot,
                              disk or 100, cidr, max_price, ami, rails, profile)
            action = "launched"
    try:
        if instance.get("PublicIpAddress"):
            write_host(resource_name(name), instance["PublicIpAddress"], key_path(name), instance["InstanceId"])
            if wait > 0:
                wait_for_ssh(resource_name(name), wait)
                jobs.install_agent(resource_name(name), agent_settings(instance, rails))
            elif action == "found" and changed:
                print(f"warning: --no-wait: the changed guardrails reach the instance when tenfold next connects "
                      f"(`tenfold cloud up {name}` again, or `tenfold cloud start {name}`)", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"tenfold: tenfold-{name} ({instance['InstanceId']}) is {action} and bills: `tenfold cloud up {name}` "
              f"finishes setting it up, `tenfold cloud down {name}` removes it", file=sys.stderr)
        raise
    return {"name": name, "action": action, "instance": summary(instance), "cost": hourly_cost(s, instance, region),
            "guardrails": vars(rails)}


def agent_settings(instance: dict, rails: Guardrails) -> dict:
    return rails.settings(instance.get("InstanceLifecycle") == "spot", running_since=launch_time(instance).timestamp())


def existing(s, name: str, region: str, found: list[dict], itype, spot, disk, ami, max_price, asked: dict,
             change_guardrails: bool) -> tuple[dict, Guardrails]:
    """The instance NAME that exists, checked against what `up` asked for; its guardrails, changed if asked."""
    instance = found[0]
    if len(found) > 1:
        print(f"warning: {len(found)} instances are named tenfold-{name} ({', '.join(i['InstanceId'] for i in found)}"
              f"): using {instance['InstanceId']}; `tenfold cloud down {name}` terminates them all", file=sys.stderr)
    refuse_mismatch(s, instance, name, region, itype, spot, disk, ami, max_price)
    rails = Guardrails.of(instance)
    wanted = rails.merged(asked)
    if wanted != rails:
        if not change_guardrails:
            raise ConfigError(f"tenfold-{name} keeps the guardrails it was launched with ({rails.describe()}): to "
                              f"change them to {wanted.describe()}, add --change-guardrails")
        with aws.aws_errors(region):
            aws.client(s, "ec2", region).create_tags(Resources=[instance["InstanceId"]], Tags=wanted.tags())
        print(f"tenfold: guardrails of tenfold-{name} changed: {rails.describe()} -> {wanted.describe()} "
              "(--max-hours counts from the instance's start)", file=sys.stderr)
    return instance, wanted


def refuse_mismatch(s, instance: dict, name: str, region: str, itype, spot, disk, ami, max_price) -> None:
    """Refuse an `up` whose flags do not describe the instance that exists: they cannot change it."""
    is_spot = instance.get("InstanceLifecycle") == "spot"
    size = sum(v.get("Size", 0) for v in volumes(s, instance, region))
    price = spot_price_limit(s, instance, region) if max_price is not None else None
    differ = [flag for flag, want, have in [
        (f"--type {itype}", itype, instance["InstanceType"]),
        ("--spot" if spot else "--on-demand", spot, is_spot),
        (f"--disk {disk}", disk, size), (f"--ami {ami}", ami, instance["ImageId"]),
        (f"--max-price {max_price}", max_price, price)] if want is not None and want != have]
    if differ:
        raise ConfigError(
            f"tenfold-{name} exists as a {instance['InstanceType']} {'spot' if is_spot else 'on-demand'} instance "
            f"with a {size} GB disk ({instance['State']['Name']}, {instance['InstanceId']}), not {' '.join(differ)}: "
            f"to replace it, `tenfold cloud down {name}` then `tenfold cloud up {name} {' '.join(differ)}`; or give "
            "another NAME")


def spot_price_limit(s, instance: dict, region: str) -> float | None:
    request = instance.get("SpotInstanceRequestId")
    if not request:
        return None
    with aws.aws_errors(region):
        found = aws.client(s, "ec2", region).describe_spot_instance_requests(
            SpotInstanceRequestIds=[request])["SpotInstanceRequests"]
    price = found[0].get("SpotPrice") if found else None
    return float(price) if price else None


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
                          jobs.boot_script(rails.settings(spot)), rails, launched)
        keep_first(s, name, region, instance)
    except KeyboardInterrupt:
        what = (f"tenfold-{name} ({launched[0]['InstanceId']}) is launched and bills" if launched else
                f"tenfold-{name} may have been launched")
        print(f"tenfold: {what}: `tenfold cloud status` shows it, `tenfold cloud up {name}` finishes setting it "
              f"up, `tenfold cloud down {name}` removes it", file=sys.stderr)
        raise
    except aws.CloudError as e:
        try:
            abandon(s, name, region, launched)
        except aws.CloudError as cleanup:
            left = f"tenfold-{name} ({launched[0]['InstanceId']}, launched)" if launched else f"tenfold-{name}"
            raise aws.CloudError(f"{e}; and {left} could not be removed ({cleanup}): once that is fixed, "
                                 f"`tenfold cloud down {name}`") from None
        raise
    return instance


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


def launch_time(instance: dict) -> datetime.datetime:
    launched = instance["LaunchTime"]
    return datetime.datetime.fromisoformat(launched.replace("Z", "+00:00")) if isinstance(launched, str) else launched


def summary(instance: dict) -> dict:
    return {"id": instance["InstanceId"], "type": instance["InstanceType"], "state": instance["State"]["Name"],
            "market": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
            "zone": instance["Placement"]["AvailabilityZone"], "ip": instance.get("PublicIpAddress"),
            "launched": instance["LaunchTime"].isoformat() if hasattr(instance["LaunchTime"], "isoformat")
            else str(instance["LaunchTime"]),
            "name": next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == aws.NAME_TAG), None)}


def status(region: str | None = None, profile: str | None = None) -> list[dict]:
    s = aws.session(region, profile)
    region = aws.region_of(s)
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for inst in aws.find_instances(s, None, region):
        cost.note_launch(s, inst, region)  # one tenfold never saw answered (Ctrl-C, a crash): in the ledger now
        row = summary(inst)
        row["cost"] = hourly_cost(s, inst, region)
        row["guardrails"] = vars(Guardrails.of(inst))
        row["uptime_h"] = ((now - inst["LaunchTime"]).total_seconds() / 3600
                           if inst["State"]["Name"] == "running" else 0.0)
        rows.append(row)
    return rows


def one(s, name: str, region: str) -> dict:
    found = aws.find_instances(s, name, region)
    if not found:
        raise aws.CloudError(f"no tenfold instance named '{name}' in {region}: see `tenfold cloud status`")
    return found[0]


def change_state(name: str, region: str | None, profile: str | None, verb: str) -> dict:
    """Stop or start instance NAME, wait until it is there, and note it in the cost ledger."""
    s = aws.session(region, profile)
    region = aws.region_of(s)
    inst = one(s, name, region)
    cost.catch_up(inst, name, region)  # a stop tenfold did not make (a spot interruption), before this start
    already = {"stop": ("stopped",), "start": ("running", "pending")}[verb]
    if inst["State"]["Name"] in already:
        print(f"tenfold: tenfold-{name} is {inst['State']['Name']} already", file=sys.stderr)
        return inst
    if verb == "start" and interrupted(inst):
        raise aws.CloudError(f"AWS stopped tenfold-{name} for capacity (a spot interruption): only AWS can start "
                             f"it again, which it does when capacity returns; `tenfold cloud run {name} --resume` "
                             "waits for that and follows the resumed job")
    ec2 = aws.client(s, "ec2", region)
    call, waiter = {"stop": (ec2.stop_instances, "instance_stopped"),
                    "start": (ec2.start_instances, "instance_running")}[verb]
    with aws.aws_errors(region):
        call(InstanceIds=[inst["InstanceId"]])
        ec2.get_waiter(waiter).wait(InstanceIds=[inst["InstanceId"]], WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    inst = one(s, name, region)
    cost.record(verb, inst, name, region)
    return inst


def stop(name: str = "default", region: str | None = None, profile: str | None = None) -> dict:
    return summary(change_state(name, region, profile, "stop"))


def start(name: str = "default", region: str | None = None, profile: str | None = None,
          wait: float = SSH_WAIT) -> dict:
    """Start NAME, point `ssh tenfold-NAME` at its new address, and (waiting for ssh) make sure its agent runs:
    the agent resumes an interrupted job."""
    inst = change_state(name, region, profile, "start")
    if inst.get("PublicIpAddress"):
        connect(name, inst, wait)
    return inst


def connect(name: str, inst: dict, wait: float) -> None:
    """Point `ssh tenfold-NAME` at the running instance's address (a restart gives it a new one) and, waiting
    for ssh, make sure its agent runs with the instance's guardrails, counted from this start (the agent resumes
    an interrupted job)."""
    write_host(resource_name(name), inst["PublicIpAddress"], key_path(name), inst["InstanceId"])
    if wait > 0:
        wait_for_ssh(resource_name(name), wait)
        jobs.install_agent(resource_name(name), agent_settings(inst, Guardrails.of(inst)))


def interrupted(inst: dict) -> bool:
    """Stopped by AWS for capacity: only AWS may start it again (it does when capacity returns)."""
    return inst.get("StateReason", {}).get("Code") == "Server.SpotInstanceShutdown"


def wait_for_aws_restart(s, name: str, region: str, wait: float) -> dict:
    print(f"tenfold: AWS stopped tenfold-{name} for capacity (a spot interruption); only AWS can start it again, "
          f"which it does when capacity returns. Waiting up to {wait:.0f} s; the job resumes by itself then "
          "(Ctrl-C stops waiting, not the job)", file=sys.stderr)
    deadline = time.monotonic() + wait
    while True:
        inst = one(s, name, region)
        if inst["State"]["Name"] == "running" and inst.get("PublicIpAddress"):
            return inst
        if time.monotonic() > deadline:
            raise aws.CloudError(f"AWS has not restarted tenfold-{name} within {wait:.0f} s; it will when capacity "
                                 f"returns (follow with `tenfold cloud run {name} --resume`), or stop paying for "
                                 f"its disk with `tenfold cloud down {name}`")
        time.sleep(RESTART_POLL)


def reach(name: str, region: str | None, profile: str | None, wait: float = SSH_WAIT) -> tuple[str, bool]:
    """The ssh host of instance NAME, running: started if it is stopped (or, after a spot interruption, once AWS
    restarted it), its address refreshed, its agent running (which resumes the job); and whether tenfold
    started it for this."""
    s = aws.session(region, profile)
    region = aws.region_of(s)
    inst = one(s, name, region)
    cost.catch_up(inst, name, region)
    if inst["State"]["Name"] in ("stopped", "stopping") and not interrupted(inst):
        print(f"tenfold: starting tenfold-{name}", file=sys.stderr)
        start(name, region, profile, wait)
        return resource_name(name), True
    if inst["State"]["Name"] in ("stopped", "stopping"):
        inst = wait_for_aws_restart(s, name, region, wait)
        cost.catch_up(inst, name, region)  # AWS's own start, at its launch time
    elif inst["State"]["Name"] not in ("running", "pending") or not inst.get("PublicIpAddress"):
        raise aws.CloudError(f"tenfold-{name} is {inst['State']['Name']}: see `tenfold cloud status`")
    connect(name, inst, wait)
    return resource_name(name), False


def check_reachable(name: str, region: str | None, profile: str | None) -> None:
    """Before ssh to tenfold-NAME: say at once when the instance is not running (rather than an ssh timeout),
    and follow a new address (AWS restarting a spot instance gives it one)."""
    try:
        s = aws.session(region, profile)
        region = aws.region_of(s)
        found = aws.find_instances(s, name, region)
    except aws.CloudError as e:  # AWS cannot be asked (credentials expired, offline): ssh may still work
        print(f"warning: could not ask AWS about tenfold-{name} ({e}); trying ssh", file=sys.stderr)
        return
    if not found:
        raise aws.CloudError(f"no tenfold instance named '{name}' in {region} any more: see `tenfold cloud status`")
    inst = found[0]
    state = inst["State"]["Name"]
    if state in ("stopped", "stopping") and interrupted(inst):
        raise aws.CloudError(f"tenfold-{name} is stopped: AWS stopped it for capacity (a spot interruption); "
                             f"`tenfold cloud run {name} --resume` waits for AWS to start it again and follows the job")
    if state in ("stopped", "stopping"):
        when = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d):\d\d (GMT|UTC)\)", inst.get("StateTransitionReason", ""))
        since = f" since {when[1]} UTC" if when else ""
        raise aws.CloudError(f"tenfold-{name} is stopped{since} (its idle stop, --max-hours, or a stop): "
                             f"`tenfold cloud start {name}`; its files and the last job's log are kept")
    if state != "running" or not inst.get("PublicIpAddress"):
        raise aws.CloudError(f"tenfold-{name} is {state}: see `tenfold cloud status`")
    if host_entry(resource_name(name)).get("hostname") != inst["PublicIpAddress"]:
        write_host(resource_name(name), inst["PublicIpAddress"], key_path(name), inst["InstanceId"])


def down(name: str = "default", region: str | None = None, profile: str | None = None, force: bool = False) -> dict:
    """Terminate NAME, cancel its spot request, delete its security group and key pair: nothing left that bills.
    Refused (ConfigError) while the running instance holds results not fetched yet, unless `force`."""
    s = aws.session(region, profile)
    region = aws.region_of(s)
    with name_lock(name, region):
        if not force:
            check_fetched(s, name, region)
        return remove(s, name, region)


def check_fetched(s, name: str, region: str) -> None:
    """Refuse to delete results that exist only on the instance (its disk goes with it). An instance that does
    not answer is not waited for: stopping the bill comes first."""
    host = resource_name(name)
    running = [i for i in aws.find_instances(s, name, region, states=("running",)) if i.get("PublicIpAddress")]
    if not running or not host_entry(host):
        return
    try:
        files = jobs.unfetched(host)
    except aws.CloudError as e:
        print(f"warning: could not look for results not fetched yet on {host} ({e}); terminating anyway",
              file=sys.stderr)
        return
    if files:
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        raise ConfigError(f"{host} holds results not fetched yet ({files[0]}{more}): from the project's folder, "
                          f"`tenfold cloud fetch {name}` copies them here; `tenfold cloud down {name} --force` "
                          "deletes them with the instance")


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


def per_hour(rates: dict) -> str:
    total = (rates["compute"] or 0.0) + rates["storage"] + rates["ipv4"]
    compute = "unknown" if rates["compute"] is None else f"${rates['compute']:.4f}"
    return f"${total:.4f}/h (compute {compute}, gp3 storage ${rates['storage']:.4f}, IPv4 ${rates['ipv4']:.4f})"


def format_up(result: dict) -> str:
    i, host = result["instance"], resource_name(result["name"])
    return (f"{host}: {result['action']} {i['type']} ({i['market']}) in {i['zone']}, {i['state']}, {i['ip']}\n"
            f"cost: {per_hour(result['cost'])}\n"
            f"connect: ssh {host}        stop paying: tenfold cloud down {result['name']}")


def format_status(rows: list[dict]) -> str:
    if not rows:
        return "no tenfold instances"
    lines = [f"{'name':<14} {'type':<13} {'market':<9} {'state':<9} {'zone':<12} {'address':<15} {'up (h)':>7} "
             f"{'$/h':>8} {'so far $':>8}  guardrails"]
    for r in rows:
        c, g = r["cost"], Guardrails(**r["guardrails"])
        rate = (c["compute"] or 0.0) + c["storage"] + c["ipv4"]
        lines.append(f"{r['name'] or '?':<14} {r['type']:<13} {r['market']:<9} {r['state']:<9} {r['zone']:<12} "
                     f"{r['ip'] or '-':<15} {r['uptime_h']:>7.2f} {rate:>8.4f} {rate * r['uptime_h']:>8.2f}  "
                     f"{g.describe()}")
    return "\n".join(lines)


def format_down(name: str, gone: dict) -> str:
    parts = [f"terminated {', '.join(gone['instances'])}" if gone["instances"] else "no instance to terminate"]
    if gone["spot_requests"]:
        parts.append(f"cancelled spot request {', '.join(gone['spot_requests'])}")
    if gone["security_group"]:
        parts.append(f"deleted security group {gone['security_group']}")
    if gone["key_pair"]:
        parts.append(f"deleted key pair {gone['key_pair']}")
    text = f"{resource_name(name)}: " + "; ".join(parts) + ". Nothing of it bills any more."
    if gone.get("security_group_left"):
        text += (f"\nnote: AWS still holds security group {gone['security_group_left']} for the terminated instance "
                 f"(it costs nothing); `tenfold cloud down {name}` again in a few minutes deletes it")
    return text
