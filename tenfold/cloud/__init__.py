"""`tenfold cloud`: GPU instances on AWS. Only tenfold.cloud.aws imports boto3."""
