"""Seeds the example secrets and parameters of examples/secretproviderclass.yaml
into an AWS endpoint (moto in the demo). Usage: seed.py ENDPOINT_URL"""
import json
import sys

import boto3

endpoint = sys.argv[1]
common = dict(region_name="us-west-2", endpoint_url=endpoint,
              aws_access_key_id="demo", aws_secret_access_key="demo")
sm = boto3.client("secretsmanager", **common)
ssm = boto3.client("ssm", **common)

sm.create_secret(Name="prod/orders/db", SecretString=json.dumps(
    {"username": "orders", "password": "first-password", "api-key": "k-0001"}))
sm.put_secret_value(SecretId="prod/orders/db", SecretString=json.dumps(
    {"username": "orders", "password": "rotated-password", "api-key": "k-0002"}))

ssm.put_parameter(Name="/orders/feature-flags", Type="SecureString", Value="checkout=v2,search=on")
ssm.put_parameter(Name="/orders/feature-flags", Type="SecureString", Value="checkout=v3,search=on",
                  Overwrite=True)
ssm.label_parameter_version(Name="/orders/feature-flags", ParameterVersion=1, Labels=["stable"])
ssm.put_parameter(Name="/orders/endpoints", Type="StringList", Value="https://a.example,https://b.example")
print("seeded: secret prod/orders/db (2 versions), parameters /orders/feature-flags, /orders/endpoints")
