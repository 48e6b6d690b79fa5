"""The AWS test bed: a moto server on 127.0.0.1, reached by real boto3 over HTTP, plus what moto lacks.

moto has no EC2 service quotas, no request for quota increases, and fixed spot prices; the server runs in this
process, so those are filled in here by patching its handlers (only for the test session).
"""
from __future__ import annotations

import datetime
import http.server
import json
import secrets
import threading
import urllib.request
from pathlib import Path

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.spot_requests import SpotInstanceRequest
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
        self.faults: list[dict] = []  # any call fails: see fail_calls
        self.delays: dict[str, float] = {}  # action -> seconds its answer is held back (after it took effect)
        self.seen: list[str] = []  # the actions called, in order
        self.patches = self.install()
        self.imds = Imds()

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
        self.faults.clear()
        self.delays.clear()
        self.seen.clear()
        self.imds.notice = None

    def fail_launches(self, code: str, message: str = "injected by the test", times: int = 1) -> None:
        """The next `times` RunInstances calls fail with this AWS error (a 400, which botocore does not retry)."""
        self.launch_faults.append([code, message, times])

    def fail_calls(self, code: str, action: str = "*", times: int | None = None, after: str | None = None,
                   message: str = "injected by the test") -> None:
        """Calls of `action` ("*": any) fail with this AWS error: `times` times (None: until clear_faults), and
        only once `after` (an action) has been called, e.g. credentials expiring right after RunInstances."""
        self.faults.append({"code": code, "action": action, "times": times, "after": after, "message": message})

    def clear_faults(self) -> None:
        self.faults.clear()
        self.delays.clear()

    def fault_for(self, action: str) -> dict | None:
        for fault in self.faults:
            if fault["action"] in ("*", action) and (fault["after"] is None or fault["after"] in self.seen):
                if fault["times"] is not None:
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def install(self) -> list[tuple]:
        bed = self
        from moto.core.responses import BaseResponse
        from moto.core.utils import camelcase_to_underscores
        original_call = BaseResponse.call_action

        def call_action(handler):
            action = handler._get_action()
            fault = bed.fault_for(action)
            if fault is not None:  # the action's own method raises, so moto answers as AWS would
                def refuse():
                    raise EC2ClientError(fault["code"], fault["message"])
                setattr(handler, camelcase_to_underscores(action), refuse)
            result = original_call(handler)
            bed.seen.append(action)
            if action in bed.delays:
                import time
                time.sleep(bed.delays[action])
            return result

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
            backend = handler.ec2_backend
            before = {i.id for i in backend.all_instances()}
            result = original_run(handler)
            market = handler._get_param("InstanceMarketOptions", {}) or {}
            if market.get("MarketType") == "spot":  # moto makes no spot request for these: make it as AWS does
                tags = handler._parse_tag_specification()
                for inst in backend.all_instances():
                    if inst.id not in before:
                        spot_request(backend, inst, market.get("SpotOptions", {}), tags)
            return result

        patches = [(BaseResponse, "call_action", call_action),
                   (InstanceResponse, "run_instances", run_instances),
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
        from tenfold.cloud.provision import DLAMI_PARAMETER
        account = "123456789012"
        image = next(iter(ec2_backends[account][region].amis))
        ssm_backends[account][region]._parameters[DLAMI_PARAMETER].append(Parameter(
            account_id=account, name=DLAMI_PARAMETER, value=image, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=time.time(), version=1, data_type="aws:ec2:image"))
        return image

    def interrupt(self, instance_id: str, region: str = "us-east-1") -> None:
        """A spot interruption, step one: the 2-minute notice appears in the instance metadata (IMDSv2)."""
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=2)
        self.imds.notice = {"action": "stop", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def stop_for_capacity(self, instance_id: str, region: str = "us-east-1") -> None:
        """A spot interruption, step two: AWS stops the instance, as it reports that (no tenfold call involved)."""
        from moto.ec2.models import ec2_backends
        from moto.ec2.models.instances import StateReason
        backend = ec2_backends["123456789012"][region]
        instance = backend.get_instance(instance_id)
        instance.stop()
        now = datetime.datetime.now(datetime.timezone.utc)
        instance._reason = f"Service initiated ({now:%Y-%m-%d %H:%M:%S} GMT)"
        instance.state_reason = StateReason("Server.SpotInstanceShutdown: The instance was stopped because the "
                                            "Spot price exceeded the bid price.", "Server.SpotInstanceShutdown")
        request = backend.spot_instance_requests.get(getattr(instance, "spot_instance_request_id", None))
        if request is not None:
            request.state, request._status_code = "disabled", "instance-stopped-by-price"
        self.imds.notice = None

    def restart_by_aws(self, instance_id: str, after: float, region: str = "us-east-1") -> threading.Timer:
        """Capacity returns: AWS starts the interrupted instance again by itself, `after` seconds from now."""
        def restart():
            from moto.ec2.models import ec2_backends
            backend = ec2_backends["123456789012"][region]
            instance = backend.get_instance(instance_id)
            instance.start()
            from moto.core.utils import utcnow
            instance.launch_time = utcnow()  # AWS resets the launch time at every start
            request = backend.spot_instance_requests.get(getattr(instance, "spot_instance_request_id", None))
            if request is not None:
                request.state, request._status_code = "active", "fulfilled"
        timer = threading.Timer(after, restart)
        timer.start()
        return timer

    def close(self) -> None:
        self.imds.close()
        for cls, name, fn in self.patches:
            if fn is None:
                delattr(cls, name)
            else:
                setattr(cls, name, fn)
        self.server.stop()


class Imds:
    """The IMDSv2 side of the instance metadata service that tenfold's agent reads: a session token (PUT, with a
    TTL header), then the spot interruption notice with that token (404 until a test arms it)."""

    def __init__(self):
        imds = self
        self.notice: dict | None = None
        self.tokens: set[str] = set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.reply(400, b"")
                token = secrets.token_hex(16)
                imds.tokens.add(token)
                self.reply(200, token.encode())

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    return self.reply(401, b"")  # IMDSv1 (no token) is refused, as on tenfold's instances
                if self.path == "/latest/meta-data/spot/instance-action" and imds.notice:
                    return self.reply(200, json.dumps(imds.notice).encode())
                self.reply(404, b"")

            def reply(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def spot_request(backend, instance, options: dict, tags: dict) -> None:
    """The spot request AWS creates behind a RunInstances with spot options, fulfilled by `instance`."""
    from unittest import mock
    from moto.ec2.utils import random_spot_request_id
    with mock.patch.object(SpotInstanceRequest, "launch_instance", lambda self: instance):
        request = SpotInstanceRequest(
            backend, random_spot_request_id(), options.get("MaxPrice"), instance.image_id,
            options.get("SpotInstanceType", "one-time"), None, None, None, None, instance.key_name, [], None,
            instance.instance_type, instance.placement.zone, None, None, False, instance.subnet_id, tags, None,
            options.get("InstanceInterruptionBehavior", "terminate"))
    backend.spot_instance_requests[request.id] = request
    instance.spot_instance_request_id = request.id


def raise_not_found(code: str):
    from moto.servicequotas.exceptions import NoSuchResource
    raise NoSuchResource()


def ec2():
    import boto3
    return boto3.client("ec2", region_name="us-east-1")


def nothing_left(name="gpu"):
    assert ec2().describe_instances(Filters=[{"Name": "instance-state-name",
                                              "Values": ["pending", "running", "stopped"]}])["Reservations"] == []
    assert ec2().describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"tenfold-{name}"]}])["SecurityGroups"] == []
    assert ec2().describe_key_pairs(Filters=[{"Name": "key-name", "Values": [f"tenfold-{name}"]}])["KeyPairs"] == []


def ago(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)


__all__ = ["AwsTestBed", "ago", "ec2", "nothing_left"]
