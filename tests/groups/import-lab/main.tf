# A purpose-made group for tests/test_imports.py: applies in seconds (no instances, no Route53).
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

provider "aws" {
  region = var.region
}

resource "aws_vpc" "this" {
  cidr_block = "10.91.0.0/16"
  tags       = { Name = "import-lab-${var.run_id}" }
}

resource "aws_subnet" "a" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = "10.91.1.0/24"
  availability_zone = "${var.region}a"
  tags              = { Name = "import-lab-a" }
}

# Its rules are separate resources, so a rule added by hand is an unmanaged finding of its own.
resource "aws_security_group" "app" {
  name   = "import-lab-app"
  vpc_id = aws_vpc.this.id
}

resource "aws_security_group_rule" "app_https" {
  type              = "ingress"
  security_group_id = aws_security_group.app.id
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = ["10.91.0.0/16"]
}
