# A purpose-made group for the project's own tests: a few fast resources.
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

variable "cidr" {
  type    = string
  default = "10.90.0.0/16"
}

provider "aws" {
  region = var.region
}

resource "aws_vpc" "this" {
  cidr_block = var.cidr
  tags       = { Name = "tiny-${var.run_id}" }
}

resource "aws_subnet" "a" {
  vpc_id     = aws_vpc.this.id
  cidr_block = cidrsubnet(var.cidr, 8, 1)
  # Declared, so a rebuild lands where the original was (AWS picks any zone otherwise).
  availability_zone = "${var.region}a"
  tags       = { Name = "tiny-a", Tier = "private" }
}

resource "aws_security_group" "ssh" {
  name   = "tiny-ssh"
  vpc_id = aws_vpc.this.id
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
  tags = { Purpose = "ssh" }
}

output "vpc_id" {
  value = aws_vpc.this.id
}

output "subnet_ids" {
  value = [aws_subnet.a.id]
}
