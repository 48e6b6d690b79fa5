"""Everything that talks to AWS: boto3 sessions and clients, and AWS errors turned into one-line advice.

Credentials, profiles and regions come from boto3's standard chain; AWS_ENDPOINT_URL (and the per-service
AWS_ENDPOINT_URL_<SERVICE>) point it elsewhere, which is how the tests reach a local moto server.
"""
from __future__ import annotations

import contextlib
import datetime
from typing import Iterator

import boto3
import botocore.config
import botocore.exceptions

from tenfold.errors import CloudError
from tenfold.polling import wait_until

DEFAULT_REGION = "us-east-1"
RETRIES = botocore.config.Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10,
                                 read_timeout=60)


def session(region: str | None = None, profile: str | None = None) -> boto3.Session:
    with aws_errors(region):
        s = boto3.Session(profile_name=profile, region_name=region)
    known = {r for partition in s.get_available_partitions() for r in s.get_available_regions("ec2", partition)}
    if region and known and region not in known:  # else a typo would surface as a DNS failure
        raise CloudError(f"unknown AWS region '{region}': one of {', '.join(sorted(known)[:6])}, ... "
                         "(`tenfold cloud gpus --regions` shows where each GPU type is offered)")
    return s


def region_of(s: boto3.Session) -> str:
    return s.region_name or DEFAULT_REGION


def client(s: boto3.Session, service: str, region: str | None = None):
    return s.client(service, region_name=region or region_of(s), config=RETRIES)


ADVICE = {
    "AuthFailure": "AWS rejected the credentials: check `aws configure` or AWS_PROFILE",
    "UnauthorizedOperation": "these AWS credentials may not do this: the IAM user needs EC2 rights",
    "ExpiredToken": "the AWS session token has expired: log in again (e.g. `aws sso login`)",
    "RequestExpired": "the AWS request expired: check this machine's clock",
    "InvalidClientTokenId": "AWS does not know these credentials: check `aws configure` or AWS_PROFILE",
    "OptInRequired": "this region is not enabled for the account: enable it in the AWS console or use --region",
}


@contextlib.contextmanager
def aws_errors(region: str | None = None) -> Iterator[None]:
    """Turn botocore's exceptions into CloudError with advice."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError:
        raise CloudError("no AWS credentials found: run `aws configure`, or set AWS_PROFILE or "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    except botocore.exceptions.ProfileNotFound as e:
        raise CloudError(f"{e}: see `aws configure list-profiles`")
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as e:
        raise CloudError(f"cannot reach AWS ({e}); check the network and the region{f' {region}' if region else ''}"
                         )
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        message = e.response.get("Error", {}).get("Message", "")
        raise CloudError(ADVICE.get(code, f"AWS said {code}: {message}"))
    except botocore.exceptions.BotoCoreError as e:  # an unreadable answer, a proxy in the way, ...
        raise CloudError(f"talking to AWS failed: {str(e).splitlines()[0][:200]}")


def spot_history(s: boto3.Session, types: list[str], since: datetime.datetime | None = None,
                 region: str | None = None) -> list[dict]:
    """Spot price records (Linux) for `types`: the latest per zone, or every change since `since`."""
    ec2 = client(s, "ec2", region)
    args = {"InstanceTypes": types, "ProductDescriptions": ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]}
    args["StartTime"] = since or datetime.datetime.now(datetime.timezone.utc)
    with aws_errors(region):
        pages = ec2.get_paginator("describe_spot_price_history").paginate(**args)
        return [r for page in pages for r in page["SpotPriceHistory"]]


def quota_values(s: boto3.Session, codes: list[str], region: str | None = None) -> dict[str, float | None]:
    """The account's EC2 quota values by code; None where AWS has no value for this account."""
    sq = client(s, "service-quotas", region)
    values = {}
    for code in codes:
        try:
            with aws_errors(region):
                values[code] = float(sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
        except CloudError:
            values[code] = None
    return values


def quota_family(instance_type: str) -> str | None:
    """'g' for the G and VT quota, 'p' for the P quota, None for types no GPU quota covers."""
    if instance_type.startswith(("g", "vt")):
        return "g"
    return "p" if instance_type.startswith("p") else None


def running_vcpus(s: boto3.Session, vcpus_of: dict[str, int], region: str | None = None) -> dict[tuple[str, bool], int]:
    """vCPUs of pending or running instances per (quota family, spot), as the quotas count them."""
    ec2 = client(s, "ec2", region)
    used: dict[tuple[str, bool], int] = {}
    with aws_errors(region):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    for inst in instances:
        family = quota_family(inst["InstanceType"])
        if family is None:
            continue
        cpu = inst.get("CpuOptions", {})
        count = vcpus_of.get(inst["InstanceType"]) or cpu.get("CoreCount", 0) * cpu.get("ThreadsPerCore", 1)
        key = (family, inst.get("InstanceLifecycle") == "spot")
        used[key] = used.get(key, 0) + count
    return used


def regions_offering(s: boto3.Session, types: list[str]) -> dict[str, list[str]]:
    """type -> the regions that offer it (only regions enabled for the account are asked)."""
    with aws_errors():
        regions = [r["RegionName"] for r in client(s, "ec2").describe_regions()["Regions"]]
    found: dict[str, list[str]] = {t: [] for t in types}
    for region in sorted(regions):
        ec2 = client(s, "ec2", region)
        with aws_errors(region):
            offers = ec2.describe_instance_type_offerings(
                LocationType="region", Filters=[{"Name": "instance-type", "Values": types}])
        for o in offers["InstanceTypeOfferings"]:
            found[o["InstanceType"]].append(region)
    return found


def request_quota(s: boto3.Session, code: str, value: float, region: str | None = None) -> dict:
    sq = client(s, "service-quotas", region)
    with aws_errors(region):
        return sq.request_service_quota_increase(ServiceCode="ec2", QuotaCode=code, DesiredValue=value)["RequestedQuota"]


def find_instances(s: boto3.Session, name: str | None, region: str | None = None,
                   states=("pending", "running", "stopping", "stopped", "shutting-down")) -> list[dict]:
    """tenfold's instances (tag tenfold:name), or the one named NAME, in the given states."""
    filters = [{"Name": "tag-key", "Values": [NAME_TAG]}, {"Name": "instance-state-name", "Values": list(states)}]
    if name is not None:
        filters.append({"Name": f"tag:{NAME_TAG}", "Values": [name]})
    with aws_errors(region):
        pages = client(s, "ec2", region).get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


NAME_TAG = "tenfold:name"


def delete_security_group(s: boto3.Session, group_id: str, region: str, wait: float, interval: float = 5.0) -> bool:
    """Delete a security group, retrying while AWS still counts a just-terminated instance's network interface
    as using it (DependencyViolation, for up to `wait` seconds); False when it is still held then."""
    ec2 = client(s, "ec2", region)

    def deleted() -> bool | None:
        try:
            ec2.delete_security_group(GroupId=group_id)
            return True
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "InvalidGroup.NotFound":
                return True
            if code != "DependencyViolation":
                with aws_errors(region):
                    raise
            return None
        except botocore.exceptions.BotoCoreError:
            with aws_errors(region):
                raise
    return bool(wait_until(deleted, wait, interval))


class LaunchError(CloudError):
    """RunInstances failed; `code` is AWS's error code, for advice that knows the launch."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def run_instance(s: boto3.Session, args: dict, region: str) -> dict:
    """RunInstances; when AWS has no capacity, again in each other zone of the default VPC (its subnets)."""
    ec2 = client(s, "ec2", region)
    with aws_errors(region):
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    tries = [None] + [sn["SubnetId"] for sn in sorted(subnets, key=lambda sn: sn["AvailabilityZone"])]
    for subnet in tries:
        try:
            return ec2.run_instances(**args, **({"SubnetId": subnet} if subnet else {}))["Instances"][0]
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code != "InsufficientInstanceCapacity":
                if code in ADVICE:
                    raise CloudError(ADVICE[code])
                raise LaunchError(code, e.response.get("Error", {}).get("Message", ""))
        except botocore.exceptions.BotoCoreError:
            with aws_errors(region):
                raise
    raise LaunchError("InsufficientInstanceCapacity", "no capacity in any zone")
