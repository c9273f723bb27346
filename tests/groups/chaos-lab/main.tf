# A purpose-made group for the chaos state machine (tests/test_chaos_machine.py):
# one of each thing the faults it injects act on (instances, a security group,
# a route to an Internet gateway, a subnet), and nothing slower than the two
# instances the provider waits on (about 10 s, created in parallel).
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
  cidr_block = "10.92.0.0/16"
  tags       = { Name = "chaos-lab-${var.run_id}" }
}

resource "aws_subnet" "private" {
  vpc_id     = aws_vpc.this.id
  cidr_block = "10.92.1.0/24"
  # Declared, so a rebuild lands where the original was (AWS picks any zone otherwise).
  availability_zone = "${var.region}a"
  tags              = { Name = "chaos-lab-private", Tier = "private" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "chaos-lab" }
}

resource "aws_route_table" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "chaos-lab" }
}

resource "aws_route" "default" {
  route_table_id         = aws_route_table.this.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "private" {
  subnet_id      = aws_subnet.private.id
  route_table_id = aws_route_table.this.id
}

resource "aws_security_group" "app" {
  name   = "chaos-lab-app"
  vpc_id = aws_vpc.this.id
  ingress {
    description = "app traffic from inside the VPC"
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = ["10.92.0.0/16"]
  }
  tags = { Purpose = "app" }
}

resource "aws_instance" "app" {
  count                  = 2
  ami                    = var.ami
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.private.id
  vpc_security_group_ids = [aws_security_group.app.id]
  user_data              = "#!/bin/sh\necho chaos-lab-${count.index}\n"
  tags                   = { Role = "microservice", Name = "chaos-lab-${count.index}" }
}

output "vpc_id" {
  value = aws_vpc.this.id
}

output "subnet_ids" {
  value = [aws_subnet.private.id]
}

output "instance_ids" {
  value = aws_instance.app[*].id
}
