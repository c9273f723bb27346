# Depends on tiny through an input: a subnet in tiny's VPC.
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

variable "ops_vpc_id" {
  type = string
}

variable "label" {
  type    = string
  default = "app"
}

provider "aws" {
  region = var.region
}

resource "aws_subnet" "app" {
  vpc_id     = var.ops_vpc_id
  cidr_block = "10.90.2.0/24"
  # Declared, so a rebuild lands where the original was (AWS picks any zone otherwise).
  availability_zone = "${var.region}a"
  tags       = { Name = "tiny-app", Tier = "public", Label = var.label }
}

output "subnet_id" {
  value = aws_subnet.app.id
}
