# __generated__ by Terraform
# Please review these resources and move them into your main configuration files.

# __generated__ by Terraform
resource "aws_network_interface" "eni" {
  description        = null
  ipv6_address_count = 0
  ipv6_addresses     = []
  private_ip         = "10.91.9.132"
  private_ips        = ["10.91.9.132"]
  private_ips_count  = 0
  security_groups    = ["sg-c535e4395c0366fb6"]
  source_dest_check  = true
  subnet_id          = "subnet-fdc625fd7b8af5eea"
  tags               = {}
  tags_all           = {}
}

# __generated__ by Terraform from "igw-acf17103e47e2ba2e"
resource "aws_internet_gateway" "igw" {
  tags     = {}
  tags_all = {}
  vpc_id   = "vpc-822de2762e10ac3dd"
}

# __generated__ by Terraform from "sg-c535e4395c0366fb6"
resource "aws_security_group" "hand_made" {
  description = "by hand"
  egress = [{
    cidr_blocks      = ["0.0.0.0/0"]
    description      = ""
    from_port        = 0
    ipv6_cidr_blocks = []
    prefix_list_ids  = []
    protocol         = "-1"
    security_groups  = []
    self             = false
    to_port          = 0
  }]
  ingress = [{
    cidr_blocks      = ["10.0.0.0/8"]
    description      = ""
    from_port        = 8080
    ipv6_cidr_blocks = []
    prefix_list_ids  = []
    protocol         = "tcp"
    security_groups  = []
    self             = false
    to_port          = 8080
  }]
  name                   = "hand-made"
  revoke_rules_on_delete = null
  tags = {
    Name = "hand made"
  }
  tags_all = {
    Name = "hand made"
  }
  vpc_id = "vpc-822de2762e10ac3dd"
  timeouts {
    create = null
    delete = null
  }
}

# __generated__ by Terraform from "rtb-243992a6e0c6af854_0.0.0.0/0"
resource "aws_route" "r" {
  carrier_gateway_id          = null
  destination_cidr_block      = "0.0.0.0/0"
  destination_ipv6_cidr_block = null
  destination_prefix_list_id  = null
  egress_only_gateway_id      = null
  gateway_id                  = "igw-acf17103e47e2ba2e"
  local_gateway_id            = null
  nat_gateway_id              = null
  route_table_id              = "rtb-243992a6e0c6af854"
  transit_gateway_id          = null
  vpc_endpoint_id             = null
  vpc_peering_connection_id   = null
  timeouts {
    create = null
    delete = null
  }
}

# __generated__ by Terraform from "acl-b914c968cf754a419"
resource "aws_network_acl" "acl" {
  egress     = []
  ingress    = []
  subnet_ids = []
  tags       = {}
  tags_all   = {}
  vpc_id     = "vpc-822de2762e10ac3dd"
}

# __generated__ by Terraform
resource "aws_security_group_rule" "app_self" {
  cidr_blocks              = []
  description              = null
  from_port                = 0
  ipv6_cidr_blocks         = []
  prefix_list_ids          = []
  protocol                 = "-1"
  security_group_id        = "sg-7a852e161b9af4fe2"
  self                     = true
  source_security_group_id = "sg-7a852e161b9af4fe2"
  to_port                  = 0
  type                     = "ingress"
}

# __generated__ by Terraform
resource "aws_subnet" "sub" {
  assign_ipv6_address_on_creation = false
  availability_zone               = "ap-southeast-1b"
  availability_zone_id            = "apse1-az2"
  cidr_block                      = "10.91.9.0/24"
  customer_owned_ipv4_pool        = null
  ipv6_cidr_block                 = null
  map_customer_owned_ip_on_launch = false
  map_public_ip_on_launch         = false
  outpost_arn                     = null
  tags                            = {}
  tags_all                        = {}
  vpc_id                          = "vpc-822de2762e10ac3dd"
  timeouts {
    create = null
    delete = null
  }
}

# __generated__ by Terraform
resource "aws_security_group_rule" "app_ssh" {
  cidr_blocks       = ["0.0.0.0/0"]
  description       = null
  from_port         = 22
  ipv6_cidr_blocks  = []
  prefix_list_ids   = []
  protocol          = "tcp"
  security_group_id = "sg-7a852e161b9af4fe2"
  self              = false
  to_port           = 22
  type              = "ingress"
}

# __generated__ by Terraform from "subnet-fdc625fd7b8af5eea/rtb-243992a6e0c6af854"
resource "aws_route_table_association" "a" {
  gateway_id     = null
  route_table_id = "rtb-243992a6e0c6af854"
  subnet_id      = "subnet-fdc625fd7b8af5eea"
}

# __generated__ by Terraform from "rtb-243992a6e0c6af854"
resource "aws_route_table" "rt" {
  propagating_vgws = []
  route = [{
    carrier_gateway_id         = ""
    cidr_block                 = "0.0.0.0/0"
    destination_prefix_list_id = ""
    egress_only_gateway_id     = ""
    gateway_id                 = "igw-acf17103e47e2ba2e"
    instance_id                = ""
    ipv6_cidr_block            = ""
    local_gateway_id           = ""
    nat_gateway_id             = ""
    network_interface_id       = ""
    transit_gateway_id         = ""
    vpc_endpoint_id            = ""
    vpc_peering_connection_id  = ""
  }]
  tags     = {}
  tags_all = {}
  vpc_id   = "vpc-822de2762e10ac3dd"
}

# __generated__ by Terraform from "i-00cafe5a7df910876"
resource "aws_instance" "rogue" {
  ami                                  = "ami-03cf127a"
  associate_public_ip_address          = true
  availability_zone                    = "ap-southeast-1b"
  disable_api_termination              = false
  ebs_optimized                        = false
  get_password_data                    = false
  hibernation                          = false
  iam_instance_profile                 = null
  instance_initiated_shutdown_behavior = "stop"
  instance_type                        = "t3.micro"
  ipv6_address_count                   = 0
  ipv6_addresses                       = []
  monitoring                           = false
  private_ip                           = "10.91.9.4"
  secondary_private_ips                = []
  security_groups                      = []
  source_dest_check                    = true
  subnet_id                            = "subnet-fdc625fd7b8af5eea"
  tags = {
    Name = "rogue"
  }
  tags_all = {
    Name = "rogue"
  }
  tenancy                = "default"
  user_data              = null
  user_data_base64       = null
  volume_tags            = null
  vpc_security_group_ids = ["sg-c535e4395c0366fb6"]
  credit_specification {
    cpu_credits = "standard"
  }
  metadata_options {
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
    http_tokens                 = "optional"
  }
  root_block_device {
    delete_on_termination = true
    encrypted             = false
    iops                  = 0
    tags                  = {}
    throughput            = 0
    volume_size           = 8
    volume_type           = "gp2"
  }
  timeouts {
    create = null
    delete = null
    update = null
  }
}
