#!/bin/sh
# EKS access entries of cluster hyades (hyades-prod in eu-west-1), written by
# `bastionctl access render`. The levels are the ClusterRoles of
# rbac.yaml, bound to the Kubernetes groups below, so no EKS access
# policy is associated (associate-access-policy would add AWS's own
# rights on top of them). An existing entry is updated with
# `aws eks update-access-entry` and the same groups and username.
set -eu

# alice
aws eks create-access-entry --region 'eu-west-1' --cluster-name 'hyades-prod' \
    --principal-arn 'arn:aws:iam::123456789012:role/bastion-alice' --type STANDARD \
    --username 'bastion:{{SessionName}}' \
    --kubernetes-groups 'bastion:hyades:admin'

# bob
aws eks create-access-entry --region 'eu-west-1' --cluster-name 'hyades-prod' \
    --principal-arn 'arn:aws:iam::123456789012:role/team/bob' --type STANDARD \
    --username 'bastion:{{SessionName}}' \
    --kubernetes-groups 'bastion:hyades:taurus:user'

# carol
aws eks create-access-entry --region 'eu-west-1' --cluster-name 'hyades-prod' \
    --principal-arn 'arn:aws:iam::123456789012:role/bastion-carol' --type STANDARD \
    --username 'bastion:{{SessionName}}' \
    --kubernetes-groups 'bastion:hyades:poweruser'
