# A purpose-made group for tests/test_leaks.py: the apply takes long enough
# (the provider waits about 10 s per instance) to kill a session in the middle
# of it, and leaves instances, a security group, a subnet and a VPC to find by tag.
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

resource "aws_vpc" "this" {
  cidr_block = "10.93.0.0/16"
}

resource "aws_subnet" "a" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = "10.93.1.0/24"
  availability_zone = "${var.region}a"
}

resource "aws_security_group" "app" {
  name   = "leaky-app-${var.run_id}"
  vpc_id = aws_vpc.this.id
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["10.93.0.0/16"]
  }
}

resource "aws_instance" "worker" {
  count                  = 3
  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.a.id
  vpc_security_group_ids = [aws_security_group.app.id]
  tags                   = { Role = "microservice", Name = "leaky-${count.index}" }
}

output "instance_ids" {
  value = aws_instance.worker[*].id
}
