"""`tenfold cloud up | status | stop | start | down`: an instance's lifecycle, found by its tags, so a rerun is safe.

Everything tenfold creates for instance NAME carries the tags tenfold=true and tenfold:name=NAME: the instance,
its root volume, its spot request, a key pair and a security group both called tenfold-NAME (made and removed
in provision.py). `down` removes all of it, so nothing is left that bills. Guardrails: guardrails.py; prices:
pricing.py; tables: present.py.
"""
from __future__ import annotations

import contextlib
import datetime

from tenfold.cloud import aws, cost, jobs
from tenfold.cloud.catalog import catalog
from tenfold.cloud.guardrails import PRICE_TAG, Guardrails, agent_settings, launch_price, launch_time
from tenfold.cloud.present import summary
from tenfold.cloud.pricing import hourly_cost, running_price, volumes
from tenfold.cloud.provision import caller_cidr, create, ensure_security_group, key_path, remove, resource_name
from tenfold.cloud.remote import wait_for_ssh
from tenfold.cloud.ssh_config import host_entry, write_host
from tenfold.errors import ConfigError
from tenfold.fileio import tenfold_home
from tenfold.polling import wait_until
from tenfold.log import note, warn

SSH_WAIT = 600   # seconds: a Deep Learning AMI takes a few minutes to boot
RESTART_POLL = 2  # seconds between looks at an interrupted instance that AWS is to restart


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
            note(f"another tenfold command is launching or removing tenfold-{name}; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def check_request(name: str, itype: str | None, disk: int | None, guardrails: dict) -> None:
    if guardrails.get("max_hours") is not None and guardrails["max_hours"] < 0:
        raise ConfigError(f"--max-hours must be above 0 (or off), got {guardrails['max_hours']}")
    if guardrails.get("max_cost") is not None and guardrails["max_cost"] < 0:
        raise ConfigError(f"--max-cost must be above 0 dollars (or off), got {guardrails['max_cost']}")
    if disk is not None and not 30 <= disk <= 16384:
        raise ConfigError(f"--disk must be between 30 and 16384 GB, got {disk}")
    if itype is not None and itype not in catalog():
        raise ConfigError(f"unknown GPU type '{itype}'; see `tenfold cloud gpus` ({', '.join(catalog())})")


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
            instance = keep_launch_price(s, instance, region)
            action = "launched"
    try:
        if instance.get("PublicIpAddress"):
            write_host(resource_name(name), instance["PublicIpAddress"], key_path(name), instance["InstanceId"])
            if wait > 0:
                wait_for_ssh(resource_name(name), wait)
                jobs.install_agent(resource_name(name), agent_config(s, instance, rails, region))
            elif action == "found" and changed:
                warn(f"--no-wait: the changed guardrails reach the instance when tenfold next connects "
                     f"(`tenfold cloud up {name}` again, or `tenfold cloud start {name}`)")
    except KeyboardInterrupt:
        note(f"tenfold-{name} ({instance['InstanceId']}) is {action} and bills: `tenfold cloud up {name}` "
             f"finishes setting it up, `tenfold cloud down {name}` removes it")
        raise
    return {"name": name, "action": action, "instance": summary(instance), "cost": hourly_cost(s, instance, region),
            "guardrails": vars(rails)}


def keep_launch_price(s, instance: dict, region: str) -> dict:
    """Tag the instance with what it costs an hour running at launch (spot: the zone's price then; unknown:
    on-demand's, above it): --max-cost counts with this price. The instance, with the tag."""
    tag = {"Key": PRICE_TAG, "Value": f"{running_price(s, instance, region):.6f}"}
    with aws.aws_errors(region):
        aws.client(s, "ec2", region).create_tags(Resources=[instance["InstanceId"]], Tags=[tag])
    return {**instance, "Tags": [t for t in instance.get("Tags", []) if t["Key"] != PRICE_TAG] + [tag]}


def earlier_cost(instance: dict, usd_per_h: float) -> float:
    """USD of the instance's starts before this one, at `usd_per_h` (from the cost ledger's running intervals)."""
    events = cost.read_ledger().get(instance["InstanceId"])
    if not events:
        return 0.0
    this_start = launch_time(instance)
    running, _, _ = cost.intervals(events, cost.now())
    return usd_per_h * sum((b - a).total_seconds() for a, b in running if b <= this_start) / 3600


def agent_config(s, instance: dict, rails: Guardrails, region: str) -> dict:
    """The agent's settings for `instance`: its guardrails, its launch price and what its earlier starts cost."""
    price = launch_price(instance)
    if price is None:  # launched before tenfold kept the price: today's
        price = running_price(s, instance, region)
    return agent_settings(instance, rails, price, earlier_cost(instance, price))


def existing(s, name: str, region: str, found: list[dict], itype, spot, disk, ami, max_price, asked: dict,
             change_guardrails: bool) -> tuple[dict, Guardrails]:
    """The instance NAME that exists, checked against what `up` asked for; its guardrails, changed if asked."""
    instance = found[0]
    if len(found) > 1:
        warn(f"{len(found)} instances are named tenfold-{name} ({', '.join(i['InstanceId'] for i in found)}"
             f"): using {instance['InstanceId']}; `tenfold cloud down {name}` terminates them all")
    refuse_mismatch(s, instance, name, region, itype, spot, disk, ami, max_price)
    rails = Guardrails.of(instance)
    wanted = rails.merged(asked)
    if wanted != rails:
        if not change_guardrails:
            raise ConfigError(f"tenfold-{name} keeps the guardrails it was launched with ({rails.describe()}): to "
                              f"change them to {wanted.describe()}, add --change-guardrails")
        with aws.aws_errors(region):
            aws.client(s, "ec2", region).create_tags(Resources=[instance["InstanceId"]], Tags=wanted.tags())
        note(f"guardrails of tenfold-{name} changed: {rails.describe()} -> {wanted.describe()} "
             "(--max-hours counts from the instance's start)")
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


def status(region: str | None = None, profile: str | None = None) -> list[dict]:
    s = aws.session(region, profile)
    region = aws.region_of(s)
    now = datetime.datetime.now(datetime.timezone.utc)
    rows, found = [], aws.find_instances(s, None, region)
    for inst in found:
        cost.note_launch(s, inst, region)  # one tenfold never saw answered (Ctrl-C, a crash): in the ledger now
    spent = {r["id"]: r["total_usd"] for r in cost.report(region, profile)["instances"]} if found else {}
    for inst in found:
        row = summary(inst)
        row["spent_usd"] = spent.get(inst["InstanceId"])  # since launch, as `tenfold cloud cost` says
        row["cost"] = hourly_cost(s, inst, region)
        row["guardrails"] = vars(Guardrails.of(inst))
        row["uptime_h"] = ((now - inst["LaunchTime"]).total_seconds() / 3600
                           if inst["State"]["Name"] == "running" else 0.0)
        rows.append(row)
    return rows


def cap_spending(name: str, more_usd: float, region: str | None, profile: str | None) -> tuple[float, float]:
    """`cloud run --max-cost`: instance NAME may cost `more_usd` more than it has so far (the cost report's
    figure): its --max-cost becomes that total, on its tags and (if it answers) its agent. (spent, cap) in USD."""
    if not more_usd > 0:
        raise ConfigError(f"--max-cost must be above 0 dollars, got {more_usd:g}")
    s = aws.session(region, profile)
    region = aws.region_of(s)
    inst = one(s, name, region)
    spent = next((r["total_usd"] for r in cost.report(region, profile)["instances"] if r["id"] == inst["InstanceId"]),
                 0.0)
    rails = Guardrails(**{**vars(Guardrails.of(inst)), "max_cost": spent + more_usd})
    with aws.aws_errors(region):
        aws.client(s, "ec2", region).create_tags(Resources=[inst["InstanceId"]], Tags=rails.tags())
    if inst["State"]["Name"] == "running" and inst.get("PublicIpAddress"):
        jobs.install_agent(resource_name(name), agent_config(s, inst, rails, region))
    return spent, spent + more_usd


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
        note(f"tenfold-{name} is {inst['State']['Name']} already")
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
        connect(name, inst, wait, region, profile)
    return inst


def connect(name: str, inst: dict, wait: float, region: str | None = None, profile: str | None = None) -> None:
    """Point `ssh tenfold-NAME` at the running instance's address (a restart gives it a new one) and, waiting
    for ssh, make sure its agent runs with the instance's guardrails, counted from this start (the agent resumes
    an interrupted job)."""
    write_host(resource_name(name), inst["PublicIpAddress"], key_path(name), inst["InstanceId"])
    if wait > 0:
        wait_for_ssh(resource_name(name), wait)
        s = aws.session(region, profile)
        region = aws.region_of(s)
        jobs.install_agent(resource_name(name), agent_config(s, inst, Guardrails.of(inst), region))


def interrupted(inst: dict) -> bool:
    """Stopped by AWS for capacity: only AWS may start it again (it does when capacity returns)."""
    return inst.get("StateReason", {}).get("Code") == "Server.SpotInstanceShutdown"


def wait_for_aws_restart(s, name: str, region: str, wait: float) -> dict:
    note(f"AWS stopped tenfold-{name} for capacity (a spot interruption); only AWS can start it again, "
         f"which it does when capacity returns. Waiting up to {wait:.0f} s; the job resumes by itself then "
         "(Ctrl-C stops waiting, not the job)")
    def restarted() -> dict | None:
        inst = one(s, name, region)
        return inst if inst["State"]["Name"] == "running" and inst.get("PublicIpAddress") else None
    inst = wait_until(restarted, wait, RESTART_POLL)
    if inst is None:
        raise aws.CloudError(f"AWS has not restarted tenfold-{name} within {wait:.0f} s; it will when capacity "
                             f"returns (follow with `tenfold cloud run {name} --resume`), or stop paying for "
                             f"its disk with `tenfold cloud down {name}`")
    return inst


def reach(name: str, region: str | None, profile: str | None, wait: float = SSH_WAIT) -> tuple[str, bool]:
    """The ssh host of instance NAME, running: started if it is stopped (or, after a spot interruption, once AWS
    restarted it), its address refreshed, its agent running (which resumes the job); and whether tenfold
    started it for this."""
    s = aws.session(region, profile)
    region = aws.region_of(s)
    inst = one(s, name, region)
    cost.catch_up(inst, name, region)
    if inst["State"]["Name"] in ("stopped", "stopping") and not interrupted(inst):
        note(f"starting tenfold-{name}")
        start(name, region, profile, wait)
        return resource_name(name), True
    if inst["State"]["Name"] in ("stopped", "stopping"):
        inst = wait_for_aws_restart(s, name, region, wait)
        cost.catch_up(inst, name, region)  # AWS's own start, at its launch time
    elif inst["State"]["Name"] not in ("running", "pending") or not inst.get("PublicIpAddress"):
        raise aws.CloudError(f"tenfold-{name} is {inst['State']['Name']}: see `tenfold cloud status`")
    connect(name, inst, wait, region, profile)
    return resource_name(name), False


def check_reachable(name: str, region: str | None, profile: str | None) -> None:
    """Before ssh to tenfold-NAME: say at once when the instance is not running (rather than an ssh timeout),
    and follow a new address (AWS restarting a spot instance gives it one)."""
    try:
        s = aws.session(region, profile)
        region = aws.region_of(s)
        found = aws.find_instances(s, name, region)
    except aws.CloudError as e:  # AWS cannot be asked (credentials expired, offline): ssh may still work
        warn(f"could not ask AWS about tenfold-{name} ({e}); trying ssh")
        return
    if not found:
        raise aws.CloudError(f"no tenfold instance named '{name}' in {region} any more: see `tenfold cloud status`")
    inst = found[0]
    state = inst["State"]["Name"]
    if state in ("stopped", "stopping") and interrupted(inst):
        raise aws.CloudError(f"tenfold-{name} is stopped: AWS stopped it for capacity (a spot interruption); "
                             f"`tenfold cloud run {name} --resume` waits for AWS to start it again and follows the job")
    if state in ("stopped", "stopping"):
        when = cost.state_change_time(inst)
        since = f" since {when:%Y-%m-%d %H:%M} UTC" if when else ""
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
        warn(f"could not look for results not fetched yet on {host} ({e}); terminating anyway")
        return
    if files:
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        raise ConfigError(f"{host} holds results not fetched yet ({files[0]}{more}): from the project's folder, "
                          f"`tenfold cloud fetch {name}` copies them here; `tenfold cloud down {name} --force` "
                          "deletes them with the instance")
