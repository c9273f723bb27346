# A purpose-made group for the project's own tests: instances make the apply
# last long enough (the provider waits about 10 s per instance) to interrupt it.
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
  cidr_block = "10.91.0.0/16"
}

resource "aws_subnet" "a" {
  vpc_id     = aws_vpc.this.id
  cidr_block = "10.91.1.0/24"
}

resource "aws_instance" "worker" {
  count         = 3
  ami           = var.ami
  instance_type = "t3.micro"
  subnet_id     = aws_subnet.a.id
  tags          = { Role = "microservice", Name = "slow-${count.index}" }
}

output "instance_ids" {
  value = aws_instance.worker[*].id
}
