# A purpose-made group that looks like real-world Terraform (issue 10): the
# network comes from a community-style VPC module (tests/modules/vpc, shaped
# like terraform-aws-modules/vpc 3.x "complete": DHCP options, managed default
# security group / network ACL / route table, NAT, S3 endpoint, flow log), the
# role security groups and their rules are for_each resources with generated
# names (name_prefix), the instances are count and for_each, and the group
# exports no `vpc_id` output: the suite has to find the VPC in the state.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "3.39.0" }
  }
}

variable "run_id" {
  type    = string
  default = "local"
}

variable "region" {
  type    = string
  default = "ap-southeast-1"
}

variable "ami" {
  type        = string
  description = "an image moto ships in every region"
  default     = "ami-1e749f67"
}

provider "aws" {
  region = var.region
}

locals {
  name = "realworld-${var.run_id}"
  # role -> what its security group opens, and to whom
  roles = {
    web = { port = 80, from_cidr = "0.0.0.0/0", from_role = null }
    app = { port = 8080, from_cidr = null, from_role = "web" }
  }
}

resource "aws_s3_bucket" "flow_logs" {
  bucket        = "realworld-flow-logs-${var.run_id}"
  force_destroy = true
}

module "vpc" {
  source = "../../modules/vpc"

  name            = local.name
  cidr            = "10.93.0.0/16"
  azs             = ["${var.region}a"]
  public_subnets  = ["10.93.1.0/24"]
  private_subnets = ["10.93.11.0/24"]

  enable_dhcp_options      = true
  dhcp_options_domain_name = "realworld.internal"

  manage_default_security_group = true
  manage_default_network_acl    = true
  manage_default_route_table    = true

  enable_nat_gateway = true
  enable_s3_endpoint = true

  enable_flow_log          = true
  flow_log_destination_arn = aws_s3_bucket.flow_logs.arn

  public_subnet_tags  = { Tier = "public" }
  private_subnet_tags = { Tier = "private" }
  tags                = { Project = "realworld" }
}

resource "aws_security_group" "role" {
  for_each = local.roles

  name_prefix = "realworld-${each.key}-"
  description = "role ${each.key}"
  vpc_id      = module.vpc.vpc_id
  tags        = { Purpose = each.key, Name = "realworld-${each.key}" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "ingress" {
  for_each = local.roles

  type                     = "ingress"
  security_group_id        = aws_security_group.role[each.key].id
  protocol                 = "tcp"
  from_port                = each.value.port
  to_port                  = each.value.port
  cidr_blocks              = each.value.from_cidr == null ? null : [each.value.from_cidr]
  source_security_group_id = each.value.from_role == null ? null : aws_security_group.role[each.value.from_role].id
}

resource "aws_security_group_rule" "egress" {
  for_each = local.roles

  type              = "egress"
  security_group_id = aws_security_group.role[each.key].id
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_instance" "web" {
  count = 1

  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = module.vpc.public_subnets[count.index]
  vpc_security_group_ids = [aws_security_group.role["web"].id]
  tags                   = { Role = "web", Name = "realworld-web-${count.index}" }
}

resource "aws_instance" "app" {
  for_each = toset(["app-a"])

  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = module.vpc.private_subnets[0]
  vpc_security_group_ids = [aws_security_group.role["app"].id]
  tags                   = { Role = "app", Name = "realworld-${each.key}" }
}

output "public_subnets" {
  value = module.vpc.public_subnets
}

output "private_subnets" {
  value = module.vpc.private_subnets
}

output "instance_ids" {
  value = concat(aws_instance.web[*].id, [for i in aws_instance.app : i.id])
}
