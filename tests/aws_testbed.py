"""The AWS test bed: a moto server on 127.0.0.1, reached by real boto3 over HTTP, plus what moto lacks.

moto has no EC2 service quotas, no request for quota increases, and fixed spot prices; the server runs in this
process, so those are filled in here by patching its handlers (only for the test session).
"""
from __future__ import annotations

import datetime
import json
import urllib.request
from pathlib import Path

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.spot_instances import SpotInstances
from moto.server import ThreadedMotoServer
from moto.servicequotas.responses import ServiceQuotasResponse


class AwsTestBed:
    def __init__(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.quotas: dict[str, float] = {}
        self.quota_requests: list[dict] = []
        self.spot_prices: list[tuple[str, str, float, datetime.datetime]] = []  # type, zone, price, since
        self.launch_faults: list[list] = []  # [AWS error code, message, times left]: RunInstances fails so
        self.patches = self.install()

    def env(self, home: Path) -> dict[str, str]:
        """Variables that point boto3 at the test bed and away from any real profile or metadata service."""
        (home / "aws").mkdir(parents=True, exist_ok=True)
        (home / "aws" / "config").write_text("")
        (home / "aws" / "credentials").write_text("")
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(home / "aws" / "config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"), "AWS_EC2_METADATA_DISABLED": "true"}

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")).read()
        self.quotas.clear()
        self.quota_requests.clear()
        self.spot_prices.clear()
        self.launch_faults.clear()

    def fail_launches(self, code: str, message: str = "injected by the test", times: int = 1) -> None:
        """The next `times` RunInstances calls fail with this AWS error (a 400, which botocore does not retry)."""
        self.launch_faults.append([code, message, times])

    def install(self) -> list[tuple]:
        bed = self

        def get_service_quota(handler) -> str:
            params = json.loads(handler.body)
            code = params["QuotaCode"]
            if params["ServiceCode"] != "ec2" or code not in bed.quotas:
                raise_not_found(code)
            return json.dumps({"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": code,
                                         "Value": bed.quotas[code], "Unit": "None"}})

        def request_service_quota_increase(handler) -> str:
            params = json.loads(handler.body)
            req = {"Id": f"req-{len(bed.quota_requests) + 1}", "ServiceCode": params["ServiceCode"],
                   "QuotaCode": params["QuotaCode"], "QuotaName": params["QuotaCode"],
                   "DesiredValue": params["DesiredValue"], "Status": "PENDING"}
            bed.quota_requests.append(req)
            return json.dumps({"RequestedQuota": req})

        def describe_spot_price_history(handler):
            from moto.core.responses import ActionResult
            types = handler._get_param("InstanceTypes", [])
            start = handler._get_param("StartTime")
            if isinstance(start, str):
                start = datetime.datetime.fromisoformat(start.replace("Z", "+00:00"))
            if isinstance(start, datetime.datetime) and start.tzinfo is None:
                start = start.replace(tzinfo=datetime.timezone.utc)
            now = datetime.datetime.now(datetime.timezone.utc)
            records = [r for r in bed.spot_prices if not types or r[0] in types]
            if start is None or now - start < datetime.timedelta(minutes=5):
                latest = {}
                for r in records:  # as AWS does for "now": the price in effect in each zone
                    if (r[0], r[1]) not in latest or r[3] > latest[(r[0], r[1])][3]:
                        latest[(r[0], r[1])] = r
                records = list(latest.values())
            else:
                records = [r for r in records if r[3] >= start]
            return ActionResult({"SpotPriceHistory": [
                {"InstanceType": t, "ProductDescription": "Linux/UNIX", "SpotPrice": f"{p:.6f}",
                 "AvailabilityZone": z, "Timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")} for t, z, p, ts in records]})

        original_run = InstanceResponse.run_instances

        def run_instances(handler):
            if bed.launch_faults:
                fault = bed.launch_faults[0]
                fault[2] -= 1
                if fault[2] <= 0:
                    bed.launch_faults.pop(0)
                raise EC2ClientError(fault[0], fault[1])
            return original_run(handler)

        patches = [(InstanceResponse, "run_instances", run_instances),
                   (ServiceQuotasResponse, "get_service_quota", get_service_quota),
                   (ServiceQuotasResponse, "request_service_quota_increase", request_service_quota_increase),
                   (SpotInstances, "describe_spot_price_history", describe_spot_price_history)]
        saved = [(cls, name, cls.__dict__.get(name)) for cls, name, _ in patches]
        for cls, name, fn in patches:
            setattr(cls, name, fn)
        return saved

    def seed_dlami(self, region: str = "us-east-1") -> str:
        """Publish an image as the Deep Learning AMI's public SSM parameter (which the API may not write)."""
        import time
        from moto.ec2.models import ec2_backends
        from moto.ssm.models import Parameter, ssm_backends
        from tenfold.cloud.instances import DLAMI_PARAMETER
        account = "123456789012"
        image = next(iter(ec2_backends[account][region].amis))
        ssm_backends[account][region]._parameters[DLAMI_PARAMETER].append(Parameter(
            account_id=account, name=DLAMI_PARAMETER, value=image, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=time.time(), version=1, data_type="aws:ec2:image"))
        return image

    def close(self) -> None:
        for cls, name, fn in self.patches:
            if fn is None:
                delattr(cls, name)
            else:
                setattr(cls, name, fn)
        self.server.stop()


def raise_not_found(code: str):
    from moto.servicequotas.exceptions import NoSuchResource
    raise NoSuchResource()


def ago(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)


__all__ = ["AwsTestBed", "ago"]
