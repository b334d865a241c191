"""The AWS side of the end-to-end tests, through boto3 against moto_server.

    python aws_lab.py ENDPOINT setup            -> {"listener", "blue", "green"}
    python aws_lab.py ENDPOINT weights LISTENER -> [[target group arn, weight], ...]
    python aws_lab.py ENDPOINT alarm NAME STATE -> {}
"""

import json
import sys

import boto3

endpoint, op, args = sys.argv[1], sys.argv[2], sys.argv[3:]
kw = dict(
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKIDLAB",
    aws_secret_access_key="lab-secret",
)
elb = boto3.client("elbv2", **kw)
cw = boto3.client("cloudwatch", **kw)

if op == "setup":
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    lb = elb.create_load_balancer(Name="web", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    groups = {
        name: elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
        for name in ("blue", "green")
    }
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{
            "Type": "forward",
            "ForwardConfig": {"TargetGroups": [
                {"TargetGroupArn": groups["blue"], "Weight": 100},
                {"TargetGroupArn": groups["green"], "Weight": 0},
            ]},
        }],
    )["Listeners"][0]["ListenerArn"]
    cw.put_metric_alarm(
        AlarmName="web-5xx", MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB",
        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="OK", StateReason="lab setup")
    print(json.dumps({"listener": listener, **groups}))
elif op == "weights":
    action = elb.describe_listeners(ListenerArns=[args[0]])["Listeners"][0]["DefaultActions"][0]
    print(json.dumps([[g["TargetGroupArn"], g.get("Weight", 1)] for g in action["ForwardConfig"]["TargetGroups"]]))
elif op == "alarm":
    cw.set_alarm_state(AlarmName=args[0], StateValue=args[1], StateReason=f"Threshold Crossed: set to {args[1]} by the test")
    print("{}")
else:
    sys.exit(f"unknown operation {op}")
